//! The embedded sample shop database, so `handler dev` and the sample `reports.toml` work out of
//! the box and the cross-engine test has identical data on SQLite and PostgreSQL.
//!
//! The data is generated from a fixed-seed PRNG relative to `today` (orders on each of the last
//! 90 days and today, so "yesterday" always has rows in every time zone). A few customer and
//! product names carry quotes, `<script>` and a leading `=` on purpose: they exercise HTML
//! escaping and CSV formula neutralisation end to end.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Connection, Executor};

/// A deterministic PRNG (splitmix64): the same `today` always yields the same shop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

struct Customer {
    id: i64,
    name: String,
    email: String,
    country: Option<String>,
    created_at: DateTime<Utc>,
}

struct Product {
    id: i64,
    sku: String,
    name: String,
    category: String,
    price_cents: i64,
}

struct Order {
    id: i64,
    customer_id: i64,
    status: &'static str,
    total_cents: i64,
    created_at: DateTime<Utc>,
}

struct OrderItem {
    order_id: i64,
    product_id: i64,
    quantity: i64,
    unit_price_cents: i64,
}

struct Shop {
    customers: Vec<Customer>,
    products: Vec<Product>,
    orders: Vec<Order>,
    items: Vec<OrderItem>,
}

const FIRST: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Karla",
    "Lukas", "Mia", "Noah", "Olivia", "Paul", "Rosa", "Sami", "Tara", "Umar",
];
const LAST: &[&str] = &[
    "Schmidt", "Dubois", "de Vries", "Novak", "Rossi", "García", "Smith", "Müller", "Jansen",
    "Kowalski", "Berg", "Larsen",
];
/// Names that must come out escaped or neutralised in every rendering.
const TRICKY_NAMES: &[&str] = &[
    "Zoë \"Zed\" O'Neil",
    "<script>alert('x')</script>",
    "=HYPERLINK(\"http://example.com\",\"click\")",
    "+49 Robert",
    "@Admin",
];
const COUNTRIES: &[Option<&str>] = &[
    Some("DE"),
    Some("DE"),
    Some("DE"),
    Some("FR"),
    Some("NL"),
    Some("AT"),
    Some("CH"),
    Some("US"),
    Some("GB"),
    Some("PL"),
    Some("IT"),
    Some("ES"),
    None,
];
const PRODUCTS: &[(&str, &str, i64)] = &[
    ("Books", "Field guide to mushrooms", 2499),
    ("Books", "The \"Complete\" SQL cookbook", 4250),
    ("Books", "Poems & <small> verses", 1299),
    ("Games", "Chess set, walnut", 8900),
    ("Games", "=SUM(A1:A9) puzzle", 1999),
    ("Games", "Card game 'Nightly'", 1450),
    ("Garden", "Pruning shears", 2990),
    ("Garden", "Rain barrel 200 l", 6400),
    ("Garden", "Seed mix, wildflowers", 599),
    ("Kitchen", "Cast-iron pan 28 cm", 5490),
    ("Kitchen", "Espresso cups (6)", 3200),
    ("Kitchen", "<script>alert(1)</script> mug", 1590),
    ("Kitchen", "Chef's knife", 7900),
    ("Toys", "Wooden train", 3999),
    ("Toys", "Kite, delta", 2450),
    ("Toys", "Marble run", 4999),
    ("Tools", "Cordless drill", 12900),
    ("Tools", "Socket set, 46 pcs", 5990),
    ("Tools", "-10% tape measure", 899),
    ("Tools", "Spirit level", 1999),
];
/// Customers who existed before the 90-day order history begins.
const INITIAL_CUSTOMERS: usize = 300;

fn at(day: NaiveDate, seconds: u64) -> DateTime<Utc> {
    let t = NaiveTime::from_num_seconds_from_midnight_opt((seconds % 86_400) as u32, 0)
        .unwrap_or(NaiveTime::MIN);
    day.and_time(t).and_utc()
}

fn generate(today: NaiveDate) -> Shop {
    let mut rng = Rng(0x5EED_2026_0001);
    let products: Vec<Product> = PRODUCTS
        .iter()
        .enumerate()
        .map(|(i, (cat, name, price))| Product {
            id: i as i64 + 1,
            sku: format!("SKU-{:04}", 1001 + i),
            name: (*name).to_string(),
            category: (*cat).to_string(),
            price_cents: *price,
        })
        .collect();

    let mut customers: Vec<Customer> = Vec::new();
    let new_customer = |rng: &mut Rng, created_at: DateTime<Utc>, customers: &mut Vec<Customer>| {
        let id = customers.len() as i64 + 1;
        let name = if rng.range(0, 40) == 0 {
            (*rng.pick(TRICKY_NAMES)).to_string()
        } else {
            format!("{} {}", rng.pick(FIRST), rng.pick(LAST))
        };
        customers.push(Customer {
            id,
            email: format!("customer{id}@example.com"),
            name,
            country: rng.pick(COUNTRIES).map(str::to_string),
            created_at,
        });
    };
    let history_start = today - ChronoDuration::days(90);
    for _ in 0..INITIAL_CUSTOMERS {
        let day = history_start - ChronoDuration::days(rng.range(1, 400) as i64);
        let secs = rng.range(0, 86_399);
        new_customer(&mut rng, at(day, secs), &mut customers);
    }
    customers.sort_by_key(|c| c.created_at);
    for (i, c) in customers.iter_mut().enumerate() {
        c.id = i as i64 + 1;
        c.email = format!("customer{}@example.com", c.id);
    }
    // Make sure every tricky name is present at least once.
    for (i, name) in TRICKY_NAMES.iter().enumerate() {
        customers[i * 7].name = (*name).to_string();
    }

    let mut orders = Vec::new();
    let mut items = Vec::new();
    let mut day = history_start;
    while day <= today {
        // Sign-ups of the day first, so that day's orders may come from them.
        let mut signups: Vec<u64> = (0..rng.range(1, 6)).map(|_| rng.range(0, 86_399)).collect();
        signups.sort_unstable();
        for secs in signups {
            new_customer(&mut rng, at(day, secs), &mut customers);
        }
        let mut times: Vec<u64> = (0..rng.range(20, 60))
            .map(|_| rng.range(0, 86_399))
            .collect();
        times.sort_unstable();
        for secs in times {
            let created_at = at(day, secs);
            let eligible = customers
                .partition_point(|c| c.created_at <= created_at)
                .max(1);
            let customer_id = customers[(rng.next() % eligible as u64) as usize].id;
            let status = match rng.range(0, 99) {
                0..=49 => "paid",
                50..=79 => "shipped",
                80..=87 => "refunded",
                _ => "pending",
            };
            let id = orders.len() as i64 + 1;
            let mut total = 0;
            let mut chosen: Vec<usize> = Vec::new();
            for _ in 0..rng.range(1, 4) {
                let p = (rng.next() % products.len() as u64) as usize;
                if chosen.contains(&p) {
                    continue;
                }
                chosen.push(p);
                let quantity = rng.range(1, 5) as i64;
                let price = products[p].price_cents;
                total += quantity * price;
                items.push(OrderItem {
                    order_id: id,
                    product_id: products[p].id,
                    quantity,
                    unit_price_cents: price,
                });
            }
            orders.push(Order {
                id,
                customer_id,
                status,
                total_cents: total,
                created_at,
            });
        }
        day += ChronoDuration::days(1);
    }
    Shop {
        customers,
        products,
        orders,
        items,
    }
}

fn sqlite_ts(t: &DateTime<Utc>) -> String {
    t.format(super::sqlite::SQLITE_TIMESTAMP_FORMAT).to_string()
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
                        country TEXT, created_at TEXT NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                       category TEXT NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                     status TEXT NOT NULL, total_cents INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(id),
                          product_id INTEGER NOT NULL REFERENCES products(id),
                          quantity INTEGER NOT NULL, unit_price_cents INTEGER NOT NULL);
CREATE INDEX orders_created_at ON orders(created_at);
CREATE INDEX customers_created_at ON customers(created_at);
CREATE INDEX order_items_order ON order_items(order_id);
";

/// Creates the sample SQLite database at `path` unless it exists. Written to a temporary file
/// in the same directory and renamed into place, so a crash or a concurrent start never leaves
/// a half-filled database behind.
pub async fn ensure_sample_database(path: &Path, today: NaiveDate) -> anyhow::Result<()> {
    if tokio::fs::try_exists(path).await.unwrap_or(false) {
        return Ok(());
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating the directory {}", dir.display()))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("sample.db");
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.{nanos}.tmp", std::process::id()));
    let result = write_sqlite(&tmp, today).await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, path).await.with_context(|| {
        format!(
            "moving the sample database into place at {}",
            path.display()
        )
    })?;
    Ok(())
}

async fn write_sqlite(tmp: &Path, today: NaiveDate) -> anyhow::Result<()> {
    let shop = generate(today);
    let opts = SqliteConnectOptions::new()
        .filename(tmp)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts)
        .await
        .with_context(|| format!("creating the sample database {}", tmp.display()))?;
    conn.execute(SQLITE_SCHEMA)
        .await
        .context("creating the sample tables")?;
    let mut tx = conn.begin().await?;
    for c in &shop.customers {
        sqlx::query("INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(c.id)
            .bind(&c.name)
            .bind(&c.email)
            .bind(&c.country)
            .bind(sqlite_ts(&c.created_at))
            .execute(&mut *tx)
            .await?;
    }
    for p in &shop.products {
        sqlx::query("INSERT INTO products VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(p.id)
            .bind(&p.sku)
            .bind(&p.name)
            .bind(&p.category)
            .bind(p.price_cents)
            .execute(&mut *tx)
            .await?;
    }
    for o in &shop.orders {
        sqlx::query("INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(o.id)
            .bind(o.customer_id)
            .bind(o.status)
            .bind(o.total_cents)
            .bind(sqlite_ts(&o.created_at))
            .execute(&mut *tx)
            .await?;
    }
    for i in &shop.items {
        sqlx::query("INSERT INTO order_items VALUES (?1, ?2, ?3, ?4)")
            .bind(i.order_id)
            .bind(i.product_id)
            .bind(i.quantity)
            .bind(i.unit_price_cents)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await.context("writing the sample data")?;
    conn.close().await?;
    Ok(())
}

const PG_SCHEMA: &str = "
DROP TABLE IF EXISTS order_items, orders, products, customers;
CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
                        country TEXT, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE products (id BIGINT PRIMARY KEY, sku TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                       category TEXT NOT NULL, price_cents BIGINT NOT NULL);
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers(id),
                     status TEXT NOT NULL, total_cents BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE order_items (order_id BIGINT NOT NULL REFERENCES orders(id),
                          product_id BIGINT NOT NULL REFERENCES products(id),
                          quantity INTEGER NOT NULL, unit_price_cents BIGINT NOT NULL);
CREATE INDEX orders_created_at ON orders(created_at);
CREATE INDEX customers_created_at ON customers(created_at);
";

/// Loads the same sample shop into the PostgreSQL database at `url` (replacing the four sample
/// tables), with `created_at` as `timestamptz`. Used by the cross-engine test and for demos.
pub async fn load_sample_postgres(url: &SecretString, today: NaiveDate) -> anyhow::Result<()> {
    let shop = generate(today);
    let opts = sqlx::postgres::PgConnectOptions::from_str(url.expose_secret())
        .map_err(|_| anyhow::anyhow!("the PostgreSQL URL is invalid"))?;
    let mut conn = sqlx::PgConnection::connect_with(&opts).await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to PostgreSQL failed: {}",
            super::postgres::describe(e)
        )
    })?;
    let mut tx = conn.begin().await?;
    tx.execute(PG_SCHEMA)
        .await
        .context("creating the sample tables")?;
    let c = &shop.customers;
    sqlx::query(
        "INSERT INTO customers SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])",
    )
    .bind(c.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.email.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.country.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .context("inserting customers")?;
    let p = &shop.products;
    sqlx::query(
        "INSERT INTO products SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])",
    )
    .bind(p.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.sku.clone()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.name.clone()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.category.clone()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.price_cents).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .context("inserting products")?;
    let o = &shop.orders;
    sqlx::query(
        "INSERT INTO orders SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[])",
    )
    .bind(o.iter().map(|o| o.id).collect::<Vec<_>>())
    .bind(o.iter().map(|o| o.customer_id).collect::<Vec<_>>())
    .bind(o.iter().map(|o| o.status.to_string()).collect::<Vec<_>>())
    .bind(o.iter().map(|o| o.total_cents).collect::<Vec<_>>())
    .bind(o.iter().map(|o| o.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .context("inserting orders")?;
    let i = &shop.items;
    sqlx::query(
        "INSERT INTO order_items SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::bigint[])",
    )
    .bind(i.iter().map(|i| i.order_id).collect::<Vec<_>>())
    .bind(i.iter().map(|i| i.product_id).collect::<Vec<_>>())
    .bind(i.iter().map(|i| i.quantity as i32).collect::<Vec<_>>())
    .bind(i.iter().map(|i| i.unit_price_cents).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .context("inserting order items")?;
    tx.commit().await.context("committing the sample data")?;
    let _ = conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_covers_every_day() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let a = generate(today);
        let b = generate(today);
        assert_eq!(a.orders.len(), b.orders.len());
        assert_eq!(
            a.customers.last().map(|c| &c.name),
            b.customers.last().map(|c| &c.name)
        );
        for back in 0..=90 {
            let day = today - ChronoDuration::days(back);
            let n = a
                .orders
                .iter()
                .filter(|o| o.created_at.date_naive() == day)
                .count();
            assert!((20..=60).contains(&n), "{day}: {n} orders");
        }
        for name in TRICKY_NAMES {
            assert!(a.customers.iter().any(|c| c.name == *name), "{name}");
        }
    }
}
