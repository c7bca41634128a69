//! The account protection flags of `serve`: lockout, rate limit, audit retention, reset and
//! invite tokens, SMTP.

use std::{fmt, net::IpAddr, time::Duration};

use clap::Args;

use super::ConfigError;
use crate::{
    mail::{MailSettings, Mailer},
    rate_limit::RateLimitSettings,
    secrets::redact_url,
};

/// Account protection settings of `serve`.
#[derive(Clone, Args)]
pub struct ProtectionArgs {
    /// Failed-login lockout.
    #[command(flatten)]
    pub lockout: LockoutArgs,
    /// Requests per minute per client address to Login, Register, Refresh, the password reset
    /// and MFA calls (token bucket; 0 disables).
    #[arg(long, env = "AUTH_RATE_LIMIT_PER_MINUTE", default_value_t = 60)]
    pub rate_limit_per_minute: u32,
    /// Burst size of the per-address token bucket.
    #[arg(long, env = "AUTH_RATE_LIMIT_BURST", default_value_t = 20)]
    pub rate_limit_burst: u32,
    /// Calls per second each API key may make (its own token bucket, bursts of as many); API
    /// keys are not subject to the per-address limit or the email lockout.
    #[arg(long, env = "AUTH_API_KEY_RATE_PER_SEC", default_value_t = 100)]
    pub api_key_rate_per_sec: u32,
    /// Proxy addresses whose `x-forwarded-for` is believed (comma-separated); off by default,
    /// so the client address is the TCP peer.
    #[arg(
        long = "trusted-proxy",
        env = "AUTH_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Days audit records are kept.
    #[arg(long, env = "AUTH_AUDIT_RETENTION_DAYS", default_value_t = 90)]
    pub audit_retention_days: u32,
    /// Lifetime of password reset tokens in seconds.
    #[arg(long, env = "AUTH_RESET_TOKEN_TTL_SECS", default_value_t = 1800)]
    pub reset_token_ttl_secs: u64,
    /// Lifetime of invite tokens (CreateUser without a password) in seconds.
    #[arg(long, env = "AUTH_INVITE_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub invite_ttl_secs: u64,
    /// SMTP server for self-service password reset and email verification mails, for example
    /// `smtp://relay:25` or `smtps://user:pass@mail.example.com`; unset disables
    /// RequestPasswordReset and RequestEmailVerification.
    #[arg(long, env = "AUTH_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of reset mails.
    #[arg(
        long,
        env = "AUTH_SMTP_FROM",
        default_value = "auth-server <auth-server@localhost>"
    )]
    pub smtp_from: String,
    /// Link in reset mails, `{token}` replaced by the token; empty puts the bare token in the mail.
    #[arg(long, env = "AUTH_RESET_LINK_TEMPLATE", default_value = "")]
    pub reset_link_template: String,
    /// Link in email verification mails, `{token}` replaced by the token; empty puts the bare
    /// token in the mail.
    #[arg(long, env = "AUTH_VERIFY_LINK_TEMPLATE", default_value = "")]
    pub verify_link_template: String,
    /// Lifetime of email verification tokens in seconds.
    #[arg(long, env = "AUTH_EMAIL_VERIFICATION_TTL_SECS", default_value_t = 24 * 3600)]
    pub email_verification_ttl_secs: u64,
}

impl fmt::Debug for ProtectionArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionArgs")
            .field("lockout", &self.lockout)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .finish_non_exhaustive()
    }
}

/// Failed-login lockout flags (the rules are `domain/lockout.rs`).
#[derive(Debug, Clone, Copy, Args)]
pub struct LockoutArgs {
    /// Failed logins per email within the window that lock it (0 disables lockout).
    #[arg(long, env = "AUTH_LOCKOUT_MAX_FAILURES", default_value_t = 5)]
    pub lockout_max_failures: u32,
    /// Window in seconds in which failed logins are counted.
    #[arg(long, env = "AUTH_LOCKOUT_WINDOW_SECS", default_value_t = 900)]
    pub lockout_window_secs: u64,
    /// First lock duration in seconds; each further lock doubles it.
    #[arg(long, env = "AUTH_LOCKOUT_BASE_SECS", default_value_t = 60)]
    pub lockout_base_secs: u64,
    /// Longest lock in seconds.
    #[arg(long, env = "AUTH_LOCKOUT_MAX_SECS", default_value_t = 3600)]
    pub lockout_max_secs: u64,
}

/// Validated protection settings.
#[derive(Debug, Clone)]
pub struct ProtectionSettings {
    /// Lockout flags (validated).
    pub lockout: LockoutArgs,
    /// Rate limit, if on.
    pub rate_limit: Option<RateLimitSettings>,
    /// Proxies whose `x-forwarded-for` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Audit retention.
    pub audit_retention: Duration,
    /// Reset token lifetime.
    pub reset_token_ttl: Duration,
    /// Invite token lifetime.
    pub invite_ttl: Duration,
    /// Email verification token lifetime.
    pub verification_ttl: Duration,
    /// SMTP, if configured.
    pub mail: Option<MailSettings>,
    /// Calls per second per API key.
    pub api_key_rate: std::num::NonZeroU32,
}

impl ProtectionArgs {
    /// Validates the arguments.
    pub fn settings(&self) -> Result<ProtectionSettings, ConfigError> {
        if self.lockout.lockout_window_secs == 0 || self.lockout.lockout_base_secs == 0 {
            return Err(ConfigError(
                "lockout window and base duration must be at least 1 s".into(),
            ));
        }
        if self.lockout.lockout_max_secs < self.lockout.lockout_base_secs {
            return Err(ConfigError(
                "lockout max duration must not be shorter than the base duration".into(),
            ));
        }
        if self.rate_limit_per_minute > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError("rate limit burst must be at least 1".into()));
        }
        let api_key_rate = std::num::NonZeroU32::new(self.api_key_rate_per_sec)
            .ok_or_else(|| ConfigError("API key rate must be at least 1 per second".into()))?;
        if self.audit_retention_days == 0 {
            return Err(ConfigError("audit retention must be at least 1 day".into()));
        }
        if !(60..=24 * 3600).contains(&self.reset_token_ttl_secs) {
            return Err(ConfigError("reset token TTL must be 60 s to 24 h".into()));
        }
        if !(60..=30 * 24 * 3600).contains(&self.invite_ttl_secs) {
            return Err(ConfigError("invite TTL must be 60 s to 30 days".into()));
        }
        if !(300..=7 * 24 * 3600).contains(&self.email_verification_ttl_secs) {
            return Err(ConfigError(
                "email verification TTL must be 5 min to 7 days".into(),
            ));
        }
        let mail = match self.smtp_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                let settings = MailSettings {
                    smtp_url: url.to_owned(),
                    from: self.smtp_from.clone(),
                    reset_link_template: self.reset_link_template.clone(),
                    verify_link_template: self.verify_link_template.clone(),
                };
                // Refuse a broken URL or sender at start, not at the first reset.
                Mailer::new(&settings).map_err(|e| ConfigError(e.to_string()))?;
                Some(settings)
            }
            _ => None,
        };
        Ok(ProtectionSettings {
            lockout: self.lockout,
            rate_limit: (self.rate_limit_per_minute > 0).then_some(RateLimitSettings {
                per_minute: self.rate_limit_per_minute,
                burst: self.rate_limit_burst,
            }),
            trusted_proxies: self.trusted_proxies.clone(),
            audit_retention: Duration::from_secs(u64::from(self.audit_retention_days) * 86_400),
            reset_token_ttl: Duration::from_secs(self.reset_token_ttl_secs),
            invite_ttl: Duration::from_secs(self.invite_ttl_secs),
            verification_ttl: Duration::from_secs(self.email_verification_ttl_secs),
            mail,
            api_key_rate,
        })
    }
}
