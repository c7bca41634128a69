//! Outgoing mail (password reset links, email verification links, address-change notices) over
//! SMTP with `lettre`.
//!
//! `AUTH_SMTP_URL` follows lettre's URL form: `smtp://host:25` (plain, for a local relay),
//! `smtp://user:pass@host:587?tls=required` (STARTTLS) or `smtps://user:pass@host` (TLS).

use std::{fmt, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};

/// Mail failures.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The SMTP URL or an address is malformed.
    #[error("mail setup: {0}")]
    Setup(String),
    /// The SMTP server refused or could not be reached.
    #[error("sending mail failed: {0}")]
    Send(String),
}

/// Where mail goes and what its links look like.
#[derive(Clone)]
pub struct MailSettings {
    /// SMTP URL (holds credentials: never printed).
    pub smtp_url: String,
    /// Sender address.
    pub from: String,
    /// Link with `{token}` where the token goes, for example
    /// `https://app.example.com/reset?token={token}`; empty sends the bare token.
    pub reset_link_template: String,
    /// Link in verification mails with `{token}`, for example
    /// `https://app.example.com/verify?token={token}`; empty sends the bare token.
    pub verify_link_template: String,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp_url", &crate::secrets::redact_url(&self.smtp_url))
            .field("from", &self.from)
            .field("reset_link_template", &self.reset_link_template)
            .field("verify_link_template", &self.verify_link_template)
            .finish()
    }
}

/// Sends mail through the configured SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reset_link_template: String,
    verify_link_template: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

impl Mailer {
    /// Builds the transport (no connection is made yet).
    pub fn new(settings: &MailSettings) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.smtp_url)
            .map_err(|e| MailError::Setup(format!("AUTH_SMTP_URL: {e}")))?
            .timeout(Some(Duration::from_secs(15)))
            .build();
        let from = settings
            .from
            .parse()
            .map_err(|e| MailError::Setup(format!("AUTH_SMTP_FROM: {e}")))?;
        Ok(Self {
            transport,
            from,
            reset_link_template: settings.reset_link_template.clone(),
            verify_link_template: settings.verify_link_template.clone(),
        })
    }

    /// Mails a reset token to `to`.
    pub async fn send_reset(
        &self,
        to: &str,
        token: &str,
        valid_for: Duration,
    ) -> Result<(), MailError> {
        let minutes = valid_for.as_secs().div_ceil(60);
        let how = if self.reset_link_template.is_empty() {
            format!("Your password reset code is:\n\n    {token}\n")
        } else {
            format!(
                "Open this link to choose a new password:\n\n    {}\n",
                self.reset_link_template.replace("{token}", token)
            )
        };
        let body = format!(
            "Someone (hopefully you) asked to reset the password of this account.\n\n\
             {how}\n\
             It works once and expires in {minutes} minutes. Using it signs out every session.\n\n\
             If you did not ask for this, ignore this mail: your password stays as it is.\n"
        );
        self.send(to, "Reset your password", body).await
    }

    /// Mails an email verification token to `to`, the address it verifies.
    pub async fn send_verification(
        &self,
        to: &str,
        token: &str,
        valid_for: Duration,
    ) -> Result<(), MailError> {
        let hours = valid_for.as_secs().div_ceil(3600);
        let how = if self.verify_link_template.is_empty() {
            format!("Your verification code is:\n\n    {token}\n")
        } else {
            format!(
                "Open this link to confirm it:\n\n    {}\n",
                self.verify_link_template.replace("{token}", token)
            )
        };
        let body = format!(
            "Please confirm that this address belongs to your account.\n\n\
             {how}\n\
             It works once and expires in {hours} hours.\n\n\
             If you did not ask for this, ignore this mail.\n"
        );
        self.send(to, "Confirm your email address", body).await
    }

    /// Tells the old address of an account that it was replaced by `new_email`.
    pub async fn send_email_changed(&self, to: &str, new_email: &str) -> Result<(), MailError> {
        let body = format!(
            "The email address of your account was changed from this address to\n\n    \
             {new_email}\n\n\
             Sign-ins and password reset mails now use the new address.\n\n\
             If you did not do this, someone may know your password: contact your administrator \
             at once.\n"
        );
        self.send(to, "Your email address was changed", body).await
    }

    async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| MailError::Setup(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Setup(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| MailError::Send(e.to_string()))?;
        Ok(())
    }
}
