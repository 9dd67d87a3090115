//! Display formats for people: locale-aware numbers, money, percentages and dates.
//!
//! Staff read `€4,091.27`, not `revenue_cents 409127`. A report names its `locale` and each
//! column may carry [`ColumnSettings`] (label, format, currency, scale, decimals); the HTML and
//! text renderings (and the XLSX number formats) go through [`Formatter`], while CSV and JSON
//! keep raw machine values.
//!
//! Grouping and decimal separators come from CLDR through `icu_decimal` (compiled data, so
//! nothing is loaded at run time). CLDR's currency and percent patterns and the date layouts
//! are small per-locale tables here, since ICU4X offers those only in its experimental crates;
//! month and weekday names come from chrono's CLDR-generated locale tables.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use fixed_decimal::{Decimal, SignedRoundingMode, UnsignedRoundingMode};
use icu_decimal::DecimalFormatter;

use crate::data::Value;

/// A display locale: how numbers, money and dates are written for the report's readers.
///
/// A closed set rather than any BCP 47 tag, so that `reports.toml` is checked at load time and
/// every supported locale has tested currency, percent and date layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Locale {
    /// `en-US`: `$1,234.50`, `Dec 1, 2026`.
    #[default]
    EnUs,
    /// `en-GB`: `€1,234.50`, `1 Dec 2026`.
    EnGb,
    /// `de-DE`: `1.234,50 €`, `01.12.2026`.
    DeDe,
    /// `fr-FR`: `1 234,50 €`, `01/12/2026`.
    FrFr,
}

/// The locale names `reports.toml` accepts, for error messages.
pub const LOCALES: [&str; 4] = ["en-US", "en-GB", "de-DE", "fr-FR"];

impl Locale {
    /// The BCP 47 tag (`de-DE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::EnUs => "en-US",
            Locale::EnGb => "en-GB",
            Locale::DeDe => "de-DE",
            Locale::FrFr => "fr-FR",
        }
    }

    /// The language subtag, for `<html lang>`.
    pub fn language(self) -> &'static str {
        match self {
            Locale::EnUs | Locale::EnGb => "en",
            Locale::DeDe => "de",
            Locale::FrFr => "fr",
        }
    }

    fn chrono(self) -> chrono::Locale {
        match self {
            Locale::EnUs => chrono::Locale::en_US,
            Locale::EnGb => chrono::Locale::en_GB,
            Locale::DeDe => chrono::Locale::de_DE,
            Locale::FrFr => chrono::Locale::fr_FR,
        }
    }

    fn icu(self) -> icu_locale_core::Locale {
        match self {
            Locale::EnUs => icu_locale_core::locale!("en-US"),
            Locale::EnGb => icu_locale_core::locale!("en-GB"),
            Locale::DeDe => icu_locale_core::locale!("de-DE"),
            Locale::FrFr => icu_locale_core::locale!("fr-FR"),
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Locale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "en-US" => Ok(Locale::EnUs),
            "en-GB" => Ok(Locale::EnGb),
            "de-DE" => Ok(Locale::DeDe),
            "fr-FR" => Ok(Locale::FrFr),
            _ => Err(format!(
                "unknown locale `{s}`: use one of {}",
                LOCALES.join(", ")
            )),
        }
    }
}

/// How a column's values are shown to people (HTML, text, XLSX number formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnFormat {
    /// As text, unchanged.
    Text,
    /// A whole number with grouping (`1,234`).
    Integer,
    /// A number with `decimals` places (default 2).
    Decimal,
    /// A fraction as a percentage: `0.125` → `12.5%` (`decimals` default 1).
    Percent,
    /// Money in `currency`, with the locale's symbol placement (`decimals` default 2).
    Currency,
    /// A calendar date in the locale's usual form, in the report's zone.
    Date,
    /// A date and time in the locale's usual form, in the report's zone.
    DateTime,
}

/// The format names `reports.toml` accepts, for error messages.
pub const FORMATS: [&str; 7] = [
    "text", "integer", "decimal", "percent", "currency", "date", "datetime",
];

impl ColumnFormat {
    /// The name used in `reports.toml` and the JSON `format` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnFormat::Text => "text",
            ColumnFormat::Integer => "integer",
            ColumnFormat::Decimal => "decimal",
            ColumnFormat::Percent => "percent",
            ColumnFormat::Currency => "currency",
            ColumnFormat::Date => "date",
            ColumnFormat::DateTime => "datetime",
        }
    }

    /// True for the formats that show numbers (right-aligned, summable).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnFormat::Integer
                | ColumnFormat::Decimal
                | ColumnFormat::Percent
                | ColumnFormat::Currency
        )
    }
}

impl FromStr for ColumnFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "text" => ColumnFormat::Text,
            "integer" => ColumnFormat::Integer,
            "decimal" => ColumnFormat::Decimal,
            "percent" => ColumnFormat::Percent,
            "currency" => ColumnFormat::Currency,
            "date" => ColumnFormat::Date,
            "datetime" => ColumnFormat::DateTime,
            _ => {
                return Err(format!(
                    "unknown format `{s}`: use one of {}",
                    FORMATS.join(", ")
                ));
            }
        })
    }
}

/// An ISO 4217 currency the handler knows how to show (symbol per locale, minor units).
///
/// A known list rather than any three letters, so a typo (`EUE`) is caught by `handler check`
/// instead of appearing in an email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

/// `(code, minor units)` of the accepted currencies.
const CURRENCIES: [(&str, u8); 16] = [
    ("EUR", 2),
    ("USD", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("JPY", 0),
    ("CAD", 2),
    ("AUD", 2),
    ("SEK", 2),
    ("NOK", 2),
    ("DKK", 2),
    ("PLN", 2),
    ("CZK", 2),
    ("HUF", 2),
    ("CNY", 2),
    ("INR", 2),
    ("NZD", 2),
];

impl Currency {
    /// The ISO 4217 code (`EUR`).
    pub fn code(self) -> &'static str {
        self.code
    }

    /// The currency's usual number of decimals (2 for EUR, 0 for JPY).
    pub fn minor_units(self) -> u8 {
        self.minor_units
    }

    /// The symbol readers of `locale` expect (CLDR): `€`, `$`, `US$`, or the code itself.
    pub fn symbol(self, locale: Locale) -> &'static str {
        match (self.code, locale) {
            ("EUR", _) => "€",
            ("GBP", _) => "£",
            ("USD", Locale::EnUs) => "$",
            ("USD", Locale::EnGb) => "US$",
            ("USD", Locale::DeDe) => "$",
            ("USD", Locale::FrFr) => "$US",
            ("JPY", Locale::EnUs | Locale::EnGb | Locale::DeDe) => "¥",
            ("JPY", Locale::FrFr) => "JPY",
            ("CAD", Locale::EnUs | Locale::EnGb) => "CA$",
            ("CAD", Locale::FrFr) => "$CA",
            ("AUD", Locale::EnUs | Locale::EnGb) => "A$",
            ("AUD", Locale::FrFr) => "$AU",
            ("CNY", Locale::EnUs | Locale::EnGb) => "CN¥",
            ("INR", _) => "₹",
            (code, _) => code,
        }
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == s)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| {
                let known: Vec<&str> = CURRENCIES.iter().map(|(c, _)| *c).collect();
                format!(
                    "unknown currency `{s}`: use an ISO 4217 code such as {}",
                    known.join(", ")
                )
            })
    }
}

/// Where a setting was written in `reports.toml`, so a problem found later (by `handler check`
/// against the query's columns, or at run time) still names the file's line and field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Located {
    /// 1-based line in the reports file.
    pub line: usize,
    /// The field path, e.g. `reports[0].sections[1].totals[0]`.
    pub field: String,
}

/// A column's display settings (`[reports.sections.columns.NAME]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSettings {
    /// The SQL column name the settings apply to.
    pub name: String,
    /// The header people see instead of the SQL name.
    pub label: Option<String>,
    /// How values are shown; `None` keeps the column's default display.
    pub format: Option<ColumnFormat>,
    /// The currency of a `currency` column.
    pub currency: Option<Currency>,
    /// Shown value = stored value × scale (integer cents × 0.01 = euros).
    pub scale: f64,
    /// Decimal places; `None` takes the format's default.
    pub decimals: Option<u8>,
    /// Where the table was written.
    pub at: Located,
}

impl ColumnSettings {
    /// Settings that only name a column (its display unchanged).
    pub fn plain(name: &str) -> Self {
        ColumnSettings {
            name: name.to_string(),
            label: None,
            format: None,
            currency: None,
            scale: 1.0,
            decimals: None,
            at: Located::default(),
        }
    }

    /// The decimals shown: the configured ones, else the format's default.
    pub fn effective_decimals(&self) -> u8 {
        self.decimals.unwrap_or(match self.format {
            Some(ColumnFormat::Currency) => self.currency.map_or(2, Currency::minor_units),
            Some(ColumnFormat::Percent) => 1,
            Some(ColumnFormat::Decimal) => 2,
            _ => 0,
        })
    }
}

/// Formats values for one report's locale and time zone. Built once per rendering (it holds
/// the CLDR symbols for the locale).
pub struct Formatter {
    locale: Locale,
    tz: Tz,
    decimal: Option<DecimalFormatter>,
}

impl fmt::Debug for Formatter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Formatter")
            .field("locale", &self.locale)
            .field("tz", &self.tz)
            .finish_non_exhaustive()
    }
}

/// A value as an exact decimal, if it is a number.
fn to_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Int(i) => Some(Decimal::from(*i)),
        Value::Float(f) if f.is_finite() => Decimal::try_from_str(&format!("{f}")).ok(),
        Value::Decimal(d) => Decimal::try_from_str(d.trim()).ok(),
        _ => None,
    }
}

/// `value × scale`, exactly when `scale` is a power of ten (0.01, 1000), else through `f64`.
fn scaled(mut d: Decimal, scale: f64) -> Option<Decimal> {
    if scale == 1.0 {
        return Some(d);
    }
    let exp = scale.log10().round();
    if (10f64.powf(exp) - scale).abs() <= scale.abs() * 1e-12 && (-30.0..=30.0).contains(&exp) {
        d.multiply_pow10(exp as i16);
        return Some(d);
    }
    let f: f64 = d.to_string().parse().ok()?;
    let product = f * scale;
    product
        .is_finite()
        .then(|| Decimal::try_from_str(&format!("{product}")).ok())
        .flatten()
}

fn rounded(mut d: Decimal, decimals: u8) -> Decimal {
    let position = -i16::from(decimals);
    d.round_with_mode(
        position,
        SignedRoundingMode::Unsigned(UnsignedRoundingMode::HalfExpand),
    );
    d.absolute.pad_end(position);
    d.absolute.trim_start();
    d
}

impl Formatter {
    /// A formatter for `locale`, showing instants in `tz`.
    pub fn new(locale: Locale, tz: Tz) -> Self {
        let decimal = DecimalFormatter::try_new(locale.icu().into(), Default::default()).ok();
        Formatter {
            locale,
            tz,
            decimal,
        }
    }

    /// The locale.
    pub fn locale(&self) -> Locale {
        self.locale
    }

    /// The time zone instants are shown in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// A number with the locale's separators and exactly `decimals` places.
    fn number(&self, d: Decimal, decimals: u8) -> String {
        let d = rounded(d, decimals);
        match &self.decimal {
            Some(f) => f.format(&d).to_string(),
            None => d.to_string(),
        }
    }

    /// Formats a plain number string (`1234.5`) with the locale's separators, keeping its
    /// decimals; for values without column settings and for counts in notes.
    pub fn grouped(&self, v: &Value) -> String {
        match to_decimal(v) {
            Some(d) => match &self.decimal {
                Some(f) => f.format(&d).to_string(),
                None => d.to_string(),
            },
            None => v.to_plain(),
        }
    }

    /// A count (`1,234` / `1.234`), for notes such as "N more rows".
    pub fn count(&self, n: usize) -> String {
        self.number(Decimal::from(n as u64), 0)
    }

    /// Money: `€4,091.27` (en), `4.091,27 €` (de), `4 091,27 €` (fr).
    pub fn currency(&self, d: Decimal, currency: Currency, decimals: u8) -> String {
        let negative = d.sign == fixed_decimal::Sign::Negative && !d.absolute.is_zero();
        let mut abs = d;
        abs.sign = fixed_decimal::Sign::None;
        let digits = self.number(abs, decimals);
        let negative = negative && digits.chars().any(|c| c.is_ascii_digit() && c != '0');
        let sym = currency.symbol(self.locale);
        let sign = if negative { "-" } else { "" };
        match self.locale {
            Locale::EnUs | Locale::EnGb => format!("{sign}{sym}{digits}"),
            Locale::DeDe | Locale::FrFr => format!("{sign}{digits}\u{a0}{sym}"),
        }
    }

    /// A fraction as a percentage: `0.125` → `12.5%` (en), `12,5 %` (de, fr).
    pub fn percent(&self, mut d: Decimal, decimals: u8) -> String {
        d.multiply_pow10(2);
        let digits = self.number(d, decimals);
        match self.locale {
            Locale::EnUs | Locale::EnGb => format!("{digits}%"),
            Locale::DeDe => format!("{digits}\u{a0}%"),
            Locale::FrFr => format!("{digits}\u{202f}%"),
        }
    }

    /// A date in the locale's usual form: `Dec 1, 2026`, `1 Dec 2026`, `01.12.2026`,
    /// `01/12/2026`.
    pub fn date(&self, d: NaiveDate) -> String {
        let pattern = match self.locale {
            Locale::EnUs => "%b %-d, %Y",
            Locale::EnGb => "%-d %b %Y",
            Locale::DeDe => "%d.%m.%Y",
            Locale::FrFr => "%d/%m/%Y",
        };
        d.format_localized(pattern, self.locale.chrono())
            .to_string()
    }

    /// A local date and time in the locale's usual form (`Dec 1, 2026, 2:05 PM`,
    /// `01.12.2026, 14:05`).
    pub fn date_time(&self, t: NaiveDateTime) -> String {
        let pattern = match self.locale {
            Locale::EnUs => "%b %-d, %Y, %-I:%M %p",
            Locale::EnGb => "%-d %b %Y, %H:%M",
            Locale::DeDe => "%d.%m.%Y, %H:%M",
            Locale::FrFr => "%d/%m/%Y %H:%M",
        };
        t.and_utc()
            .format_localized(pattern, self.locale.chrono())
            .to_string()
    }

    /// The reported day with its weekday, for headings and `<title>`:
    /// `Tuesday, December 1, 2026`, `Tuesday, 1 December 2026`, `Dienstag, 1. Dezember 2026`,
    /// `mardi 1 décembre 2026`.
    pub fn long_date(&self, d: NaiveDate) -> String {
        let pattern = match self.locale {
            Locale::EnUs => "%A, %B %-d, %Y",
            Locale::EnGb => "%A, %-d %B %Y",
            Locale::DeDe => "%A, %-d. %B %Y",
            Locale::FrFr => "%A %-d %B %Y",
        };
        d.format_localized(pattern, self.locale.chrono())
            .to_string()
    }

    /// The local wall-clock time of an instant in the report's zone.
    pub fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.tz).naive_local()
    }

    /// A value for people, by its column settings (none: the default display: grouped
    /// numbers, instants in the report's zone). NULL is empty. A value that does not fit the
    /// format (text in a currency column) is shown as it is rather than failing the report.
    pub fn value(&self, v: &Value, settings: Option<&ColumnSettings>) -> String {
        if matches!(v, Value::Null) {
            return String::new();
        }
        let Some(s) = settings.filter(|s| s.format.is_some()) else {
            return self.default_display(v);
        };
        let decimals = s.effective_decimals();
        let number = || to_decimal(v).and_then(|d| scaled(d, s.scale));
        match s.format {
            Some(ColumnFormat::Integer) => number().map(|d| self.number(d, 0)),
            Some(ColumnFormat::Decimal) => number().map(|d| self.number(d, decimals)),
            Some(ColumnFormat::Percent) => number().map(|d| self.percent(d, decimals)),
            Some(ColumnFormat::Currency) => number().map(|d| match s.currency {
                Some(c) => self.currency(d, c, decimals),
                None => self.number(d, decimals),
            }),
            Some(ColumnFormat::Date) => match v {
                Value::Date(d) => Some(self.date(*d)),
                Value::Timestamp(t) => Some(self.date(t.date())),
                Value::TimestampTz(t) => Some(self.date(self.local(*t).date())),
                Value::Text(t) => parse_naive(t).map(|t| self.date(t.date())),
                _ => None,
            },
            Some(ColumnFormat::DateTime) => match v {
                Value::Date(d) => d.and_hms_opt(0, 0, 0).map(|t| self.date_time(t)),
                Value::Timestamp(t) => Some(self.date_time(*t)),
                Value::TimestampTz(t) => Some(self.date_time(self.local(*t))),
                Value::Text(t) => parse_naive(t).map(|t| self.date_time(t)),
                _ => None,
            },
            Some(ColumnFormat::Text) | None => Some(v.to_plain()),
        }
        .unwrap_or_else(|| self.default_display(v))
    }

    fn default_display(&self, v: &Value) -> String {
        match v {
            Value::Int(_) | Value::Decimal(_) => self.grouped(v),
            Value::Float(f) if f.is_finite() => self.grouped(v),
            Value::TimestampTz(t) => t
                .with_timezone(&self.tz)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string(),
            other => other.to_plain(),
        }
    }

    /// The sum of a column as the column shows it (for a "Total" row).
    pub fn total(&self, sum: &Decimal, settings: Option<&ColumnSettings>) -> String {
        let v = Value::Decimal(sum.to_string());
        match settings.filter(|s| s.format.is_some()) {
            Some(s) => self.value(&v, Some(s)),
            None => self.grouped(&v),
        }
    }
}

/// SQLite keeps timestamps as text: `YYYY-MM-DD HH:MM:SS` (or with `T`), read as local time.
fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

/// Sums the numeric values of one column exactly (NULLs and non-numbers count as nothing), so
/// a "Total" row never depends on float rounding. `None` when the column has no number.
pub fn column_sum<'a>(values: impl Iterator<Item = &'a Value>) -> Option<Decimal> {
    let mut int_sum: i128 = 0;
    let mut any = false;
    let mut exact: Option<Decimal> = None;
    let mut float_sum = 0f64;
    let mut floats = false;
    for v in values {
        match v {
            Value::Int(i) => {
                int_sum += i128::from(*i);
                any = true;
            }
            Value::Float(f) if f.is_finite() => {
                float_sum += f;
                floats = true;
                any = true;
            }
            Value::Decimal(d) => {
                if let Ok(x) = Decimal::try_from_str(d.trim()) {
                    exact = Some(match exact {
                        None => x,
                        Some(acc) => add_decimals(&acc, &x)?,
                    });
                    any = true;
                }
            }
            _ => {}
        }
    }
    if !any {
        return None;
    }
    let mut total = Decimal::try_from_str(&int_sum.to_string()).ok()?;
    if let Some(e) = exact {
        total = add_decimals(&total, &e)?;
    }
    if floats {
        let f = Decimal::try_from_str(&format!("{float_sum}")).ok()?;
        total = add_decimals(&total, &f)?;
    }
    Some(total)
}

/// Exact decimal addition through scaled integers (fixed_decimal has no arithmetic).
fn add_decimals(a: &Decimal, b: &Decimal) -> Option<Decimal> {
    let frac = |d: &Decimal| -> i16 {
        let s = d.to_string();
        s.split_once('.').map_or(0, |(_, f)| f.len() as i16)
    };
    let scale = frac(a).max(frac(b));
    let as_int = |d: &Decimal| -> Option<i128> {
        let mut x = d.clone();
        x.multiply_pow10(scale);
        x.to_string().parse::<i128>().ok()
    };
    let sum = as_int(a)?.checked_add(as_int(b)?)?;
    let mut out = Decimal::try_from_str(&sum.to_string()).ok()?;
    out.multiply_pow10(-scale);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(code: &str) -> ColumnSettings {
        ColumnSettings {
            format: Some(ColumnFormat::Currency),
            currency: Some(code.parse().unwrap()),
            scale: 0.01,
            decimals: Some(2),
            ..ColumnSettings::plain("revenue_cents")
        }
    }

    fn f(locale: Locale) -> Formatter {
        Formatter::new(locale, chrono_tz::Europe::Berlin)
    }

    #[test]
    fn currency_per_locale() {
        let cents = Value::Int(409_127);
        let eur = money("EUR");
        assert_eq!(f(Locale::EnUs).value(&cents, Some(&eur)), "€4,091.27");
        assert_eq!(f(Locale::EnGb).value(&cents, Some(&eur)), "€4,091.27");
        assert_eq!(f(Locale::DeDe).value(&cents, Some(&eur)), "4.091,27\u{a0}€");
        assert_eq!(
            f(Locale::FrFr).value(&cents, Some(&eur)),
            "4\u{202f}091,27\u{a0}€"
        );
        let usd = money("USD");
        assert_eq!(f(Locale::EnUs).value(&cents, Some(&usd)), "$4,091.27");
        assert_eq!(f(Locale::EnGb).value(&cents, Some(&usd)), "US$4,091.27");
        assert_eq!(
            f(Locale::EnUs).value(&Value::Int(-150), Some(&eur)),
            "-€1.50"
        );
        assert_eq!(
            f(Locale::DeDe).value(&Value::Int(-150), Some(&eur)),
            "-1,50\u{a0}€"
        );
        // Half away from zero, as for money; exact for numeric text.
        let mut two = eur.clone();
        two.scale = 1.0;
        assert_eq!(
            f(Locale::EnUs).value(&Value::Decimal("2.345".into()), Some(&two)),
            "€2.35"
        );
        assert_eq!(
            f(Locale::EnUs).value(&Value::Decimal("-0.001".into()), Some(&two)),
            "€0.00"
        );
        let jpy = ColumnSettings {
            decimals: None,
            scale: 1.0,
            ..money("JPY")
        };
        assert_eq!(
            f(Locale::EnUs).value(&Value::Int(1500), Some(&jpy)),
            "¥1,500"
        );
        assert!("EUE".parse::<Currency>().is_err());
    }

    #[test]
    fn numbers_and_percentages_per_locale() {
        let pct = ColumnSettings {
            format: Some(ColumnFormat::Percent),
            decimals: Some(1),
            ..ColumnSettings::plain("share")
        };
        let v = Value::Float(0.125);
        assert_eq!(f(Locale::EnUs).value(&v, Some(&pct)), "12.5%");
        assert_eq!(f(Locale::DeDe).value(&v, Some(&pct)), "12,5\u{a0}%");
        assert_eq!(f(Locale::FrFr).value(&v, Some(&pct)), "12,5\u{202f}%");
        let dec = ColumnSettings {
            format: Some(ColumnFormat::Decimal),
            decimals: Some(3),
            ..ColumnSettings::plain("x")
        };
        assert_eq!(
            f(Locale::DeDe).value(&Value::Decimal("1234567.5".into()), Some(&dec)),
            "1.234.567,500"
        );
        let int = ColumnSettings {
            format: Some(ColumnFormat::Integer),
            ..ColumnSettings::plain("n")
        };
        assert_eq!(
            f(Locale::EnGb).value(&Value::Int(1234567), Some(&int)),
            "1,234,567"
        );
        assert_eq!(
            f(Locale::FrFr).value(&Value::Int(1234567), Some(&int)),
            "1\u{202f}234\u{202f}567"
        );
        // Without settings: grouped as before, NULL empty, text unchanged.
        assert_eq!(f(Locale::EnUs).value(&Value::Int(409127), None), "409,127");
        assert_eq!(f(Locale::DeDe).value(&Value::Int(409127), None), "409.127");
        assert_eq!(f(Locale::EnUs).value(&Value::Null, Some(&int)), "");
        // A value that does not fit the format is shown as it is.
        assert_eq!(
            f(Locale::EnUs).value(&Value::Text("n/a".into()), Some(&int)),
            "n/a"
        );
        assert_eq!(f(Locale::DeDe).count(12345), "12.345");
    }

    #[test]
    fn dates_per_locale_in_the_report_zone() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(f(Locale::EnUs).long_date(d), "Tuesday, December 1, 2026");
        assert_eq!(f(Locale::EnGb).long_date(d), "Tuesday, 1 December 2026");
        assert_eq!(f(Locale::DeDe).long_date(d), "Dienstag, 1. Dezember 2026");
        assert_eq!(f(Locale::FrFr).long_date(d), "mardi 1 décembre 2026");
        let date = ColumnSettings {
            format: Some(ColumnFormat::Date),
            ..ColumnSettings::plain("d")
        };
        let dt = ColumnSettings {
            format: Some(ColumnFormat::DateTime),
            ..ColumnSettings::plain("t")
        };
        // 23:30 UTC on Nov 30 is already Dec 1 in Berlin.
        let t = Value::TimestampTz(
            DateTime::parse_from_rfc3339("2026-11-30T23:30:00Z")
                .unwrap()
                .into(),
        );
        assert_eq!(f(Locale::EnUs).value(&t, Some(&date)), "Dec 1, 2026");
        assert_eq!(f(Locale::EnGb).value(&t, Some(&date)), "1 Dec 2026");
        assert_eq!(f(Locale::DeDe).value(&t, Some(&date)), "01.12.2026");
        assert_eq!(f(Locale::FrFr).value(&t, Some(&date)), "01/12/2026");
        assert_eq!(
            f(Locale::EnUs).value(&t, Some(&dt)),
            "Dec 1, 2026, 12:30 AM"
        );
        assert_eq!(f(Locale::DeDe).value(&t, Some(&dt)), "01.12.2026, 00:30");
        // SQLite text timestamps are taken as they are written.
        assert_eq!(
            f(Locale::EnGb).value(&Value::Text("2026-12-01 14:05:00".into()), Some(&dt)),
            "1 Dec 2026, 14:05"
        );
    }

    #[test]
    fn sums_are_exact_and_skip_nulls() {
        let vals = [
            Value::Int(5),
            Value::Null,
            Value::Decimal("0.10".into()),
            Value::Decimal("0.20".into()),
            Value::Text("x".into()),
        ];
        assert_eq!(column_sum(vals.iter()).unwrap().to_string(), "5.30");
        assert!(column_sum([Value::Null].iter()).is_none());
        let big = [Value::Int(i64::MAX), Value::Int(i64::MAX)];
        assert_eq!(
            column_sum(big.iter()).unwrap().to_string(),
            "18446744073709551614"
        );
    }

    #[test]
    fn names_parse_and_unknown_ones_are_explained() {
        assert_eq!("de-DE".parse::<Locale>().unwrap(), Locale::DeDe);
        assert!("de".parse::<Locale>().unwrap_err().contains("en-US"));
        assert_eq!(
            "percent".parse::<ColumnFormat>().unwrap(),
            ColumnFormat::Percent
        );
        assert!(
            "money"
                .parse::<ColumnFormat>()
                .unwrap_err()
                .contains("currency")
        );
    }
}
