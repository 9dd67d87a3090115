//! CSV (RFC 4180, UTF-8, header row, CRLF): the full result for the email attachment and the API.

use std::io::Write;

use super::neutralise;
use crate::data::{Table, Value};

/// Renders the whole table as CSV text.
pub fn render_csv(table: &Table) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_csv(table, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Streams the table as CSV into `w`, so large results need not exist twice in memory.
/// Text cells (and header names) that a spreadsheet would take as a formula get a leading `'`;
/// numbers stay numbers, NULL is an empty field.
pub fn write_csv(table: &Table, w: impl Write) -> std::io::Result<()> {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(w);
    out.write_record(
        table
            .columns
            .iter()
            .map(|c| neutralise(&c.name).into_owned()),
    )?;
    let mut cell = String::new();
    for row in &table.rows {
        for v in row {
            cell.clear();
            match v {
                Value::Text(t) => cell.push_str(&neutralise(t)),
                other => cell.push_str(&other.to_plain()),
            }
            out.write_field(cell.as_bytes())?;
        }
        out.write_record(None::<&[u8]>)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Column, ColumnType};

    #[test]
    fn quotes_and_neutralises() {
        let t = Table {
            columns: vec![
                Column {
                    name: "name".into(),
                    kind: ColumnType::Text,
                },
                Column {
                    name: "n".into(),
                    kind: ColumnType::Integer,
                },
            ],
            rows: vec![
                vec![Value::Text("a \"b\", c".into()), Value::Int(-5)],
                vec![Value::Text("=SUM(A1)".into()), Value::Null],
                vec![
                    Value::Text("line\nbreak".into()),
                    Value::Decimal("-1.50".into()),
                ],
            ],
            truncated: false,
        };
        assert_eq!(
            render_csv(&t),
            "name,n\r\n\"a \"\"b\"\", c\",-5\r\n'=SUM(A1),\r\n\"line\nbreak\",-1.50\r\n"
        );
    }
}
