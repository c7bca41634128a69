//! Outgoing mail (password reset links) over SMTP with `lettre`.
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

/// What a reset mail says.
#[derive(Clone)]
pub struct MailSettings {
    /// SMTP URL (holds credentials: never printed).
    pub smtp_url: String,
    /// Sender address.
    pub from: String,
    /// Link with `{token}` where the token goes, for example
    /// `https://app.example.com/reset?token={token}`; empty sends the bare token.
    pub reset_link_template: String,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp_url", &crate::secrets::redact_url(&self.smtp_url))
            .field("from", &self.from)
            .field("reset_link_template", &self.reset_link_template)
            .finish()
    }
}

/// Sends mail through the configured SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reset_link_template: String,
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
        })
    }

    /// Mails a reset token to `to`.
    pub async fn send_reset(
        &self,
        to: &str,
        token: &str,
        valid_for: Duration,
    ) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| MailError::Setup(format!("recipient: {e}")))?;
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
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Reset your password")
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
