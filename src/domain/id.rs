//! Ids as clients send them back (in a path, in a cursor). Squeeze issues UUIDs, so an id
//! with a control character names nothing and is never looked up: a NUL, which PostgreSQL's
//! text cannot even hold, would otherwise fail the statement instead of finding no row.

/// Whether `id` could be the id of something Squeeze made.
pub fn may_name_a_row(id: &str) -> bool {
    !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_with_a_control_character_names_nothing() {
        assert!(may_name_a_row("0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"));
        assert!(may_name_a_row("not-a-uuid but printable"));
        assert!(!may_name_a_row("a\0b"));
        assert!(!may_name_a_row("line\nbreak"));
    }
}
