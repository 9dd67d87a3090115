//! A tiny shop database (the tables the sample `reports.toml` queries) with rows placed around
//! one report window, for running the sample SQL on SQLite and PostgreSQL.

/// SQLite schema: `created_at` is UTC text `YYYY-MM-DD HH:MM:SS`, as in the sample database.
pub const SQLITE_SCHEMA: &str = "
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
                        country TEXT, created_at TEXT NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, name TEXT NOT NULL,
                       category TEXT NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, status TEXT NOT NULL,
                     total_cents INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE order_items (order_id INTEGER NOT NULL, product_id INTEGER NOT NULL,
                          quantity INTEGER NOT NULL, unit_price_cents INTEGER NOT NULL);
";

/// PostgreSQL schema: `created_at` is `timestamptz`; money columns are `integer` (int4), so
/// the queries' `CAST(SUM(...) AS BIGINT)` is exercised.
pub const POSTGRES_SCHEMA: &str = "
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL,
                        country text, created_at timestamptz NOT NULL);
CREATE TABLE products (id integer PRIMARY KEY, sku text NOT NULL, name text NOT NULL,
                       category text NOT NULL, price_cents integer NOT NULL);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL, status text NOT NULL,
                     total_cents integer NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE order_items (order_id integer NOT NULL, product_id integer NOT NULL,
                          quantity integer NOT NULL, unit_price_cents integer NOT NULL);
";

/// Rows around the Europe/Berlin calendar day 2026-03-29 (a 23-hour DST day), whose window is
/// [2026-03-28 23:00:00 UTC, 2026-03-29 22:00:00 UTC). Timestamps are UTC; on PostgreSQL the
/// literals get `+00` appended. Rows sit exactly on both bounds to prove start is inclusive and
/// end exclusive.
pub fn inserts(timestamp_suffix: &str) -> String {
    let ts = |t: &str| format!("'{t}{timestamp_suffix}'");
    format!(
        "
INSERT INTO products VALUES (1, 'SKU-A', 'Alpha', 'tools', 1500), (2, 'SKU-B', 'Beta', 'toys', 500),
                            (3, 'SKU-C', 'Gamma', 'toys', 1000);
INSERT INTO customers VALUES
  (1, 'Ann', 'ann@example.com', 'DE', {c1}),
  (2, 'Bob', 'bob@example.com', 'DE', {c2}),
  (3, 'Cid', 'cid@example.com', 'FR', {c3}),
  (4, 'Dee', 'dee@example.com', NULL, {c4}),
  (5, 'Eve', 'eve@example.com', 'US', {c5});
INSERT INTO orders VALUES
  (1, 1, 'paid', 1500, {o1}),
  (2, 2, 'paid', 2500, {o2}),
  (3, 1, 'cancelled', 999, {o3}),
  (4, 3, 'paid', 7000, {o4}),
  (5, 2, 'shipped', 4000, {o5}),
  (6, 3, 'shipped', 3000, {o6});
INSERT INTO order_items VALUES (1, 1, 1, 1500), (2, 1, 1, 1500), (2, 2, 2, 500), (3, 3, 1, 999),
                               (4, 1, 4, 1750), (5, 2, 8, 500), (6, 3, 3, 1000);
",
        c1 = ts("2026-03-29 10:00:00"),
        c2 = ts("2026-03-28 23:30:00"),
        c3 = ts("2026-03-29 11:00:00"),
        c4 = ts("2026-03-29 12:00:00"),
        c5 = ts("2026-03-30 10:00:00"),
        o1 = ts("2026-03-28 23:00:00"), // exactly the start: included
        o2 = ts("2026-03-29 12:00:00"),
        o3 = ts("2026-03-29 21:59:59"),
        o4 = ts("2026-03-29 22:00:00"), // exactly the end: excluded
        o5 = ts("2026-03-28 22:59:59"), // a second before the start: excluded
        o6 = ts("2026-03-29 08:00:00"),
    )
}

/// What each sample section must return for that window, cells as text.
pub fn expected() -> Vec<Vec<Vec<String>>> {
    let rows = |rows: &[&[&str]]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    };
    // Every UTC hour of the day is listed; hours without orders count 0.
    let hours = |counts: &[(&str, &str)]| -> Vec<Vec<String>> {
        (0..24)
            .map(|h| {
                let hh = format!("{h:02}");
                let n = counts
                    .iter()
                    .find(|(k, _)| *k == hh)
                    .map_or("0", |(_, n)| n);
                vec![format!("{hh}:00"), n.to_string()]
            })
            .collect()
    };
    vec![
        rows(&[
            &["cancelled", "1", "999"],
            &["paid", "2", "4000"],
            &["shipped", "1", "3000"],
        ]),
        rows(&[
            &["SKU-C", "Gamma", "4", "3999"],
            &["SKU-A", "Alpha", "2", "3000"],
            &["SKU-B", "Beta", "2", "1000"],
        ]),
        hours(&[("08", "1"), ("12", "1"), ("21", "1"), ("23", "1")]),
        rows(&[&["DE", "2"], &["-", "1"], &["FR", "1"]]),
    ]
}
