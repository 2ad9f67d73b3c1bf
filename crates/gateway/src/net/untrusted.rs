//! Outside input made safe for events and logs: bounded in size and with control characters
//! escaped. Shared by the registry (event details) and the edge (log fields).

/// Bytes of outside input at most in one event field or log value.
pub const MAX_LOGGED_BYTES: usize = 256;

/// Outside input made safe for events and logs: at most [`MAX_LOGGED_BYTES`] bytes once
/// escaped (cut on a character boundary, marked with `…`), control characters escaped (`\n`, `\u{1b}`), so a
/// value cannot forge log lines or terminal escapes.
pub fn bounded(value: &str) -> String {
    Bounded(value).to_string()
}

/// [`bounded`] as a `Display` wrapper, for `tracing` fields without an allocation up front.
pub struct Bounded<'a>(pub &'a str);

impl std::fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut written = 0;
        let mut piece = String::new();
        for c in self.0.chars() {
            piece.clear();
            if c.is_control() {
                piece.extend(c.escape_default());
            } else {
                piece.push(c);
            }
            if written + piece.len() > MAX_LOGGED_BYTES {
                return f.write_str("…");
            }
            f.write_str(&piece)?;
            written += piece.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
