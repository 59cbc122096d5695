//! The `bourse` binary.
fn main() -> anyhow::Result<()> {
    Ok(())
}
