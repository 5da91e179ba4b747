//! What a spreadsheet must never run: a CSV cell that Excel, LibreOffice or Google Sheets
//! would read as a formula (OWASP "CSV Injection").

use std::borrow::Cow;

/// A cell as it is safe to export: one that begins with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'`, so a spreadsheet shows it as text instead of running
/// it (`=HYPERLINK(...)` in a User-Agent becomes `'=HYPERLINK(...)`). Every other cell is
/// written as it is.
pub fn cell(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_triggers_get_a_leading_quote_and_nothing_else_changes() {
        for risky in [
            "=HYPERLINK(\"http://x\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(cell(risky), format!("'{risky}"), "{risky:?}");
        }
        for plain in [
            "",
            "ada@example.com",
            "Mozilla/5.0",
            "2026-12-02T06:00:00Z",
            "a=b",
            "'quoted",
        ] {
            assert_eq!(cell(plain), plain, "{plain:?}");
        }
    }
}
