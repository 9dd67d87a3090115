//! CSV (RFC 4180, UTF-8, header row, CRLF): the full result for the email attachment and the API.

use std::io::Write;

use super::neutralise;
use crate::data::{Column, Table, Value};

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
    let mut out = CsvRowWriter::new(w);
    out.header(&table.columns)?;
    for row in &table.rows {
        out.row(row)?;
    }
    out.finish()
}

/// Row-at-a-time CSV output for [`crate::data::DataSource::stream_query`]: the same format as
/// [`write_csv`] without holding the result in memory.
pub struct CsvRowWriter<W: Write> {
    out: csv::Writer<W>,
    cell: String,
}

impl<W: Write> CsvRowWriter<W> {
    /// Wraps `w`; nothing is written until [`CsvRowWriter::header`].
    pub fn new(w: W) -> Self {
        let out = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(w);
        CsvRowWriter {
            out,
            cell: String::new(),
        }
    }

    /// Writes the header row (column names, formula-neutralised).
    pub fn header(&mut self, columns: &[Column]) -> std::io::Result<()> {
        self.out
            .write_record(columns.iter().map(|c| neutralise(&c.name).into_owned()))?;
        Ok(())
    }

    /// Writes one row.
    pub fn row(&mut self, row: &[Value]) -> std::io::Result<()> {
        for v in row {
            self.cell.clear();
            match v {
                Value::Text(t) => self.cell.push_str(&neutralise(t)),
                other => self.cell.push_str(&other.to_plain()),
            }
            self.out.write_field(self.cell.as_bytes())?;
        }
        self.out.write_record(None::<&[u8]>)?;
        Ok(())
    }

    /// Flushes buffered output to the underlying writer.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ColumnType;

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
