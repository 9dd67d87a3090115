//! Charts: what a section's `chart = { ... }` asks for, and the PNG drawn from it on the
//! server ([`draw`]), so the picture shows in every mail client, Outlook included (no SVG, no
//! scripts), with a bundled font (the machines have no system fonts).

pub mod draw;

use super::format::Located;

/// The chart types `reports.toml` accepts.
pub const CHART_TYPES: [&str; 3] = ["bar", "hbar", "line"];

/// How a chart draws its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChartKind {
    /// Vertical bars, one group per category.
    Bar,
    /// Horizontal bars, for long category names.
    HBar,
    /// Lines over an ordered category, date or time axis.
    Line,
}

impl ChartKind {
    /// The name used in `reports.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChartKind::Bar => "bar",
            ChartKind::HBar => "hbar",
            ChartKind::Line => "line",
        }
    }
}

impl std::str::FromStr for ChartKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bar" => Ok(ChartKind::Bar),
            "hbar" => Ok(ChartKind::HBar),
            "line" => Ok(ChartKind::Line),
            _ => Err(format!(
                "unknown chart type `{s}`: use one of {}",
                CHART_TYPES.join(", ")
            )),
        }
    }
}

/// A column named by a setting, with where the name was written (for later problems).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    /// The SQL column name.
    pub name: String,
    /// Where in `reports.toml` it was named.
    pub at: Located,
}

/// A section's chart: one picture of its rows, drawn on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartSpec {
    /// Bars or lines.
    pub kind: ChartKind,
    /// The category, date or time column along the axis.
    pub x: ColumnRef,
    /// One or more numeric columns (a legend when several).
    pub y: Vec<ColumnRef>,
    /// The chart's title (default: the section title).
    pub title: Option<String>,
    /// Where `chart` was written.
    pub at: Located,
}

/// A chart as the HTML body refers to it: a `cid:` (email) or `data:` (API preview) source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineChart {
    /// The `src` of the `<img>`.
    pub src: String,
    /// Alt text naming the chart and its top values, for readers without images.
    pub alt: String,
    /// Display width in CSS pixels (the PNG may be drawn at 2×).
    pub width: u32,
    /// Display height in CSS pixels.
    pub height: u32,
}

/// A drawn chart: the PNG and what the HTML needs to show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartImage {
    /// The PNG bytes (drawn at 2× for sharp screens).
    pub png: Vec<u8>,
    /// Display width in CSS pixels.
    pub width: u32,
    /// Display height in CSS pixels.
    pub height: u32,
    /// Alt text naming the chart and its top values.
    pub alt: String,
}

/// The chart of one section, or `None` when it has none, has no rows, or cannot be drawn.
/// See [`draw`] for the picture itself.
pub fn render_section_png(
    section: &super::SectionResult,
    locale: super::format::Locale,
) -> Option<ChartImage> {
    draw::section_chart(section, locale)
}

/// One entry per section: its chart as a `data:` URI, for the API's HTML preview.
pub fn data_uri_charts(
    sections: &[super::SectionResult],
    locale: super::format::Locale,
) -> Vec<Option<InlineChart>> {
    use base64::Engine as _;
    sections
        .iter()
        .map(|s| {
            render_section_png(s, locale).map(|c| InlineChart {
                src: format!(
                    "data:image/png;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(&c.png)
                ),
                alt: c.alt,
                width: c.width,
                height: c.height,
            })
        })
        .collect()
}
