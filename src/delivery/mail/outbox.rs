//! The outbox transport: with no relay configured, each email is written as an `.eml` file,
//! so local work sees exactly what would have been sent without any SMTP setup.

use std::path::Path;

use super::message::{Built, OutgoingReport, outbox_name};
use super::smtp::SendOutcome;

/// Writes `<report>-<occurrence>.eml` atomically (temp file + rename), so a reader never sees
/// half a message and a retried occurrence replaces its own file.
pub(super) async fn write_outbox(dir: &Path, msg: &OutgoingReport, built: &Built) -> SendOutcome {
    let name = outbox_name(msg);
    let target = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let write = async {
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::write(&tmp, &built.bytes).await?;
        tokio::fs::rename(&tmp, &target).await
    };
    match write.await {
        Ok(()) => SendOutcome::Sent {
            message_id: built.message_id.clone(),
            accepted: u32::try_from(built.recipients.len()).unwrap_or(u32::MAX),
            rejected: Vec::new(),
        },
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            SendOutcome::Transient(format!("cannot write {}: {e}", target.display()))
        }
    }
}
