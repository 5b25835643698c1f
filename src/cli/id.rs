//! `ckm id`: print this home's identity public key.

use anyhow::Result;

use super::Context;

pub fn run(ctx: &Context) -> Result<()> {
    let identity = ctx.public_identity()?;
    ctx.output(
        serde_json::json!({ "identity": identity.to_string() }),
        || identity.to_string(),
    )
}
