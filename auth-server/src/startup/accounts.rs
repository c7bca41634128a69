//! The domain's settings from the configuration (`config` does not know the domain's types).

use std::time::Duration;

use super::MFA_CHALLENGE_TTL;
use crate::{
    config::Settings,
    domain::{AccountSettings, LockoutPolicy},
};

/// The domain's rules from the configuration (`config` does not know the domain's types).
pub(super) fn account_settings(settings: &Settings) -> AccountSettings {
    let lockout = settings.protection.lockout;
    AccountSettings {
        allow_registration: settings.allow_registration,
        refresh_ttl: settings.refresh_token_ttl,
        session_max_lifetime: settings.session_max_lifetime,
        session_idle_timeout: settings.session_idle_timeout,
        min_password_length: settings.hashing.min_password_length,
        lockout: LockoutPolicy {
            max_failures: lockout.lockout_max_failures,
            window: Duration::from_secs(lockout.lockout_window_secs),
            base_lock: Duration::from_secs(lockout.lockout_base_secs),
            max_lock: Duration::from_secs(lockout.lockout_max_secs),
        },
        reset_token_ttl: settings.protection.reset_token_ttl,
        invite_ttl: settings.protection.invite_ttl,
        verification_ttl: settings.protection.verification_ttl,
        mfa_challenge_ttl: MFA_CHALLENGE_TTL,
        totp_issuer: settings.issuer.clone(),
        erasure_delay: settings.lifecycle.erasure_delay,
    }
}
