//! CSV (RFC 4180, UTF-8, header row, CRLF): the full result for the email attachment and the API.

use std::io::Write;

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
/// [`write_csv`] without holding the result in memory. Rows are encoded straight into a byte
/// buffer (no `String` per cell) that goes to `w` in [`CSV_CHUNK`]-sized writes.
pub struct CsvRowWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

/// How much CSV is buffered before it is written on (and a streamed response's chunk size).
pub const CSV_CHUNK: usize = 64 * 1024;

impl<W: Write> CsvRowWriter<W> {
    /// Wraps `w`; nothing is written until [`CsvRowWriter::header`].
    pub fn new(w: W) -> Self {
        CsvRowWriter {
            out: w,
            buf: Vec::with_capacity(CSV_CHUNK + 4096),
        }
    }

    /// Writes the header row (column names, formula-neutralised).
    pub fn header(&mut self, columns: &[Column]) -> std::io::Result<()> {
        write_header(&mut self.buf, columns);
        self.spill()
    }

    /// Writes one row.
    pub fn row(&mut self, row: &[Value]) -> std::io::Result<()> {
        write_row(&mut self.buf, row);
        self.spill()
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= CSV_CHUNK {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes buffered output to the underlying writer.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}

/// Appends the header record (CRLF-terminated) to `out`.
pub fn write_header(out: &mut Vec<u8>, columns: &[Column]) {
    let start = out.len();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_text_field(out, &c.name);
    }
    end_record(out, start);
}

/// Appends one record (CRLF-terminated) to `out`: text cells formula-neutralised, numbers as
/// numbers, NULL as an empty field, quoted only where RFC 4180 needs it.
pub fn write_row(out: &mut Vec<u8>, row: &[Value]) {
    let start = out.len();
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match v {
            Value::Text(t) => write_text_field(out, t),
            // Digits, signs, dashes, colons, dots, `inf`/`NaN`: never a comma, quote or newline,
            // so no field scan (most cells of an export are these).
            Value::Null
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Date(_)
            | Value::Timestamp(_)
            | Value::TimestampTz(_)
            | Value::Uuid(_) => v.write_plain(out),
            other => {
                let at = out.len();
                other.write_plain(out);
                if needs_quotes(&out[at..]) {
                    // Rare (a JSON or decimal cell with a comma): redo this field quoted.
                    let field = out.split_off(at);
                    write_quoted(out, &field);
                }
            }
        }
    }
    end_record(out, start);
}

/// A record that wrote no byte at all (one empty field) is written as `""`, as the `csv`
/// crate does, so it does not read back as a blank line.
fn end_record(out: &mut Vec<u8>, start: usize) {
    if out.len() == start {
        out.extend_from_slice(b"\"\"");
    }
    out.extend_from_slice(b"\r\n");
}

fn needs_quotes(field: &[u8]) -> bool {
    field
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
}

fn write_text_field(out: &mut Vec<u8>, t: &str) {
    let neutral = matches!(
        t.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    let bytes = t.as_bytes();
    if needs_quotes(bytes) {
        out.push(b'"');
        if neutral {
            out.push(b'\'');
        }
        write_escaped(out, bytes);
        out.push(b'"');
    } else {
        if neutral {
            out.push(b'\'');
        }
        out.extend_from_slice(bytes);
    }
}

fn write_quoted(out: &mut Vec<u8>, field: &[u8]) {
    out.push(b'"');
    write_escaped(out, field);
    out.push(b'"');
}

fn write_escaped(out: &mut Vec<u8>, field: &[u8]) {
    let mut rest = field;
    while let Some(p) = rest.iter().position(|b| *b == b'"') {
        out.extend_from_slice(&rest[..=p]);
        out.push(b'"');
        rest = &rest[p + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ColumnType;

    /// The `csv` crate (QuoteStyle::Necessary, CRLF) as the reference for the hand-written
    /// encoder.
    fn reference(table: &Table) -> String {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        w.write_record(
            table
                .columns
                .iter()
                .map(|c| crate::render::neutralise(&c.name).into_owned()),
        )
        .unwrap();
        for row in &table.rows {
            w.write_record(row.iter().map(|v| match v {
                Value::Text(t) => crate::render::neutralise(t).into_owned(),
                other => other.to_plain(),
            }))
            .unwrap();
        }
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn matches_the_csv_crate() {
        let texts = [
            "", "a", "=1+2", "-", "@x", "\tq", "\rq", "a,b", "\"", "x\"y\"", "l\nb", "l\r\nb",
            "é ü", " lead", "trail ",
        ];
        for one_column in [true, false] {
            let columns: Vec<Column> = if one_column {
                vec![Column {
                    name: "=c".into(),
                    kind: ColumnType::Text,
                }]
            } else {
                vec![
                    Column {
                        name: "a,b".into(),
                        kind: ColumnType::Text,
                    },
                    Column {
                        name: "n".into(),
                        kind: ColumnType::Json,
                    },
                ]
            };
            let mut rows = Vec::new();
            for t in texts {
                if one_column {
                    rows.push(vec![Value::Text(t.into())]);
                    rows.push(vec![Value::Null]);
                } else {
                    rows.push(vec![
                        Value::Text(t.into()),
                        Value::Json(serde_json::json!({"k": [1, 2], "t": t})),
                    ]);
                    rows.push(vec![Value::Null, Value::Null]);
                    rows.push(vec![Value::Decimal("1,5".into()), Value::Float(-0.5)]);
                }
            }
            let t = Table {
                columns,
                rows,
                truncated: false,
            };
            assert_eq!(render_csv(&t), reference(&t));
        }
    }

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
