//! Plain-text tables for the human output of list commands (`--json` prints the API's JSON).

/// Left-aligned columns, two spaces apart.
pub fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
}

/// `s` cut to at most `chars_max` characters, with `…` when it was cut, so one long title
/// cannot push the other columns off the screen.
pub fn clip(s: &str, chars_max: usize) -> String {
    if s.chars().count() <= chars_max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(chars_max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line of a table cell: control characters (a newline in a title) would break the row.
pub fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_stay_on_one_short_line() {
        assert_eq!(clip("holiday.mp4", 20), "holiday.mp4");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("été à la mer", 5), "été …");
        assert_eq!(one_line("two\nlines\t!"), "two lines !");
    }
}
