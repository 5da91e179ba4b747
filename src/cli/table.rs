//! The one way the CLI prints a table: every column as wide as its widest cell (measured in
//! terminal columns, so accents, CJK and emoji line up), two spaces between columns, numbers
//! right-aligned, the last column never padded (a long subject runs on without pushing the
//! others).

use unicode_width::UnicodeWidthStr as _;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Align {
    Left,
    Right,
}

pub(super) struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns as `(header, alignment)`.
    pub(super) fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            headers: columns.iter().map(|(h, _)| *h).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each ending in a newline.
    pub(super) fn render(&self) -> String {
        let n = self.headers.len();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let mut widths = vec![0; n];
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line.iter()) {
                *w = (*w).max(cell.width());
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate().take(n) {
                let pad = " ".repeat(widths[i].saturating_sub(cell.width()));
                if i > 0 {
                    text.push_str("  ");
                }
                match self.align[i] {
                    Align::Right => {
                        text.push_str(&pad);
                        text.push_str(cell);
                    }
                    Align::Left if i + 1 == n => text.push_str(cell),
                    Align::Left => {
                        text.push_str(cell);
                        text.push_str(&pad);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }

    pub(super) fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cells_are() {
        let mut t = Table::new(&[
            ("ID", Align::Left),
            ("STATUS", Align::Left),
            ("N", Align::Right),
            ("SUBJECT", Align::Left),
        ]);
        t.row(vec![
            "a1".into(),
            "cancelled".into(),
            "7".into(),
            "Café ☕ news".into(),
        ]);
        t.row(vec![
            "b22".into(),
            "sent".into(),
            "1200".into(),
            "東京".into(),
        ]);
        assert_eq!(
            t.render(),
            "ID   STATUS        N  SUBJECT\n\
             a1   cancelled     7  Café ☕ news\n\
             b22  sent       1200  東京\n"
        );
    }
}
