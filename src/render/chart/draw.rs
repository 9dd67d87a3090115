//! Drawing a section's chart as a PNG: bars, horizontal bars or lines, with axes, grid, value
//! labels, a legend for several series and a title.
//!
//! Drawn with `tiny-skia` (anti-aliased paths, PNG encoding) and text rasterised by `ab_glyph`
//! from DejaVu Sans, whose TTF bytes the `dejavu` crate bundles (Bitstream Vera licence with
//! DejaVu's public-domain changes), so nothing is looked up or downloaded at run time. The
//! picture is 640×360 CSS pixels drawn at 2× for sharp screens.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Rect, Stroke, Transform};

use super::super::SectionResult;
use super::super::format::{ColumnFormat, ColumnSettings, Formatter, Locale};
use super::{ChartImage, ChartKind};
use crate::data::Value;

/// Display size in CSS pixels.
pub const WIDTH: u32 = 640;
/// Display height in CSS pixels.
pub const HEIGHT: u32 = 360;
/// Pixels per CSS pixel in the PNG.
pub const DENSITY: u32 = 2;
/// The most categories a chart shows (the top ones, in query order); bars get too thin past it.
const MAX_CATEGORIES: usize = 40;
/// The most points a line chart shows.
const MAX_POINTS: usize = 500;

const PALETTE: [(u8, u8, u8); 6] = [
    (0x1f, 0x6f, 0xeb),
    (0xe3, 0x6b, 0x1b),
    (0x2d, 0xa4, 0x4e),
    (0x8a, 0x3f, 0xfc),
    (0xd0, 0x2f, 0x4d),
    (0x0f, 0x9b, 0x9b),
];
const TEXT: (u8, u8, u8) = (0x1f, 0x23, 0x28);
const MUTED: (u8, u8, u8) = (0x57, 0x60, 0x6a);
const GRID: (u8, u8, u8) = (0xe1, 0xe4, 0xe8);

struct Canvas<'f> {
    pixmap: Pixmap,
    font: FontRef<'f>,
    bold: FontRef<'f>,
}

fn paint(c: (u8, u8, u8)) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color(Color::from_rgba8(c.0, c.1, c.2, 255));
    p.anti_alias = true;
    p
}

impl Canvas<'_> {
    fn s(v: f32) -> f32 {
        v * DENSITY as f32
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, c: (u8, u8, u8)) {
        if let Some(r) = Rect::from_xywh(
            Self::s(x),
            Self::s(y),
            Self::s(w).max(0.5),
            Self::s(h).max(0.5),
        ) {
            self.pixmap
                .fill_rect(r, &paint(c), Transform::identity(), None);
        }
    }

    fn line(&mut self, points: &[(f32, f32)], c: (u8, u8, u8), width: f32) {
        let mut pb = PathBuilder::new();
        for (i, (x, y)) in points.iter().enumerate() {
            if i == 0 {
                pb.move_to(Self::s(*x), Self::s(*y));
            } else {
                pb.line_to(Self::s(*x), Self::s(*y));
            }
        }
        if let Some(path) = pb.finish() {
            let stroke = Stroke {
                width: Self::s(width),
                ..Stroke::default()
            };
            self.pixmap
                .stroke_path(&path, &paint(c), &stroke, Transform::identity(), None);
        }
    }

    fn dot(&mut self, x: f32, y: f32, r: f32, c: (u8, u8, u8)) {
        if let Some(path) = PathBuilder::from_circle(Self::s(x), Self::s(y), Self::s(r)) {
            self.pixmap.fill_path(
                &path,
                &paint(c),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }
    }

    fn text_width(&self, text: &str, size: f32, bold: bool) -> f32 {
        let font = if bold { &self.bold } else { &self.font };
        let scaled = font.as_scaled(PxScale::from(size));
        let mut w = 0.0;
        let mut prev = None;
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                w += scaled.kern(p, id);
            }
            w += scaled.h_advance(id);
            prev = Some(id);
        }
        w
    }

    /// Draws text with its baseline at `y`; `anchor` 0 = left, 0.5 = centre, 1 = right.
    // Position, size, colour, anchor and weight are each needed at every call site.
    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        text: &str,
        x: f32,
        y: f32,
        size: f32,
        c: (u8, u8, u8),
        anchor: f32,
        bold: bool,
    ) {
        let px = Self::s(size);
        let start = Self::s(x) - self.text_width(text, px, bold) * anchor;
        let font = if bold {
            self.bold.clone()
        } else {
            self.font.clone()
        };
        let scaled = font.as_scaled(PxScale::from(px));
        let (w, h) = (self.pixmap.width() as i32, self.pixmap.height() as i32);
        let data = self.pixmap.data_mut();
        let mut caret = start;
        let mut prev = None;
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(px, ab_glyph::point(caret, Self::s(y)));
            caret += scaled.h_advance(id);
            prev = Some(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px_x = bounds.min.x as i32 + gx as i32;
                let px_y = bounds.min.y as i32 + gy as i32;
                if px_x < 0 || px_y < 0 || px_x >= w || px_y >= h {
                    return;
                }
                let i = ((px_y * w + px_x) * 4) as usize;
                let a = coverage.clamp(0.0, 1.0);
                for (k, v) in [c.0, c.1, c.2].into_iter().enumerate() {
                    let d = f32::from(data[i + k]);
                    data[i + k] = (d * (1.0 - a) + f32::from(v) * a).round() as u8;
                }
                data[i + 3] = 255;
            });
        }
    }

    /// Shortens `text` with `…` to fit `max` CSS pixels.
    fn fit(&self, text: &str, size: f32, max: f32) -> String {
        if self.text_width(text, Self::s(size), false) <= Self::s(max) {
            return text.to_string();
        }
        let mut out: String = text.to_string();
        while !out.is_empty() {
            out.pop();
            let candidate = format!("{}…", out.trim_end());
            if self.text_width(&candidate, Self::s(size), false) <= Self::s(max) {
                return candidate;
            }
        }
        String::new()
    }
}

/// A "nice" axis: rounded bounds and a step, so grid lines fall on 1, 2, 2.5 or 5 × 10ⁿ.
fn nice_axis(min: f64, max: f64) -> (f64, f64, f64) {
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    let span = if hi - lo <= 0.0 { 1.0 } else { hi - lo };
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

fn numeric(v: &Value, scale: f64) -> Option<f64> {
    let x = match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) if f.is_finite() => *f,
        Value::Decimal(d) => d.trim().parse().ok()?,
        _ => return None,
    };
    Some(x * scale)
}

/// An axis tick in the column's format, without decimals for money and plain numbers.
fn tick_label(f: &Formatter, value: f64, settings: Option<&ColumnSettings>) -> String {
    let mut s = settings
        .cloned()
        .unwrap_or_else(|| ColumnSettings::plain(""));
    s.scale = 1.0;
    if s.format.is_none() || !s.format.is_some_and(ColumnFormat::is_numeric) {
        s.format = Some(ColumnFormat::Decimal);
    }
    let whole = (value - value.round()).abs() < 1e-9;
    s.decimals = Some(match s.format {
        Some(ColumnFormat::Percent) => 0,
        _ if whole => 0,
        _ => 1,
    });
    f.value(&Value::Float(value), Some(&s))
}

/// Draws the section's chart; `None` without a chart, rows or drawable values.
pub fn section_chart(section: &SectionResult, locale: Locale) -> Option<ChartImage> {
    let spec = section.display.chart.as_ref()?;
    let table = &section.table;
    if table.rows.is_empty() {
        return None;
    }
    let f = Formatter::new(locale, chrono_tz::UTC);
    let col = |name: &str| table.columns.iter().position(|c| c.name == name);
    let xi = col(&spec.x.name)?;
    let ys: Vec<(usize, &str)> = spec
        .y
        .iter()
        .filter_map(|y| col(&y.name).map(|i| (i, y.name.as_str())))
        .collect();
    if ys.is_empty() {
        return None;
    }
    let limit = if spec.kind == ChartKind::Line {
        MAX_POINTS
    } else {
        MAX_CATEGORIES
    };
    let x_settings = section.display.column(&spec.x.name);
    let rows: Vec<&Vec<Value>> = table.rows.iter().take(limit).collect();
    let categories: Vec<String> = rows
        .iter()
        .map(|r| {
            r.get(xi)
                .map(|v| f.value(v, x_settings))
                .unwrap_or_default()
        })
        .collect();
    let series: Vec<Vec<Option<f64>>> = ys
        .iter()
        .map(|(i, name)| {
            let scale = section.display.column(name).map_or(1.0, |c| c.scale);
            rows.iter()
                .map(|r| r.get(*i).and_then(|v| numeric(v, scale)))
                .collect()
        })
        .collect();
    let all: Vec<f64> = series.iter().flatten().flatten().copied().collect();
    if all.is_empty() {
        return None;
    }
    let (lo, hi, step) = nice_axis(
        all.iter().copied().fold(f64::INFINITY, f64::min),
        all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let y_settings = section.display.column(ys[0].1);
    let title = spec.title.clone().unwrap_or_else(|| section.title.clone());
    let labels: Vec<String> = ys
        .iter()
        .map(|(_, n)| section.display.label(n).to_string())
        .collect();

    let font = FontRef::try_from_slice(dejavu::sans::regular()).ok()?;
    let bold = FontRef::try_from_slice(dejavu::sans::bold()).ok()?;
    let mut pixmap = Pixmap::new(WIDTH * DENSITY, HEIGHT * DENSITY)?;
    pixmap.fill(Color::WHITE);
    let mut cv = Canvas { pixmap, font, bold };

    let (w, h) = (WIDTH as f32, HEIGHT as f32);
    cv.text(
        &cv.fit(&title, 15.0, w - 24.0),
        12.0,
        22.0,
        15.0,
        TEXT,
        0.0,
        true,
    );
    let mut top = 36.0;
    if ys.len() > 1 {
        let mut x = 12.0;
        for (k, label) in labels.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            cv.rect(x, top + 1.0, 10.0, 10.0, c);
            cv.text(label, x + 14.0, top + 10.0, 11.0, MUTED, 0.0, false);
            x += 14.0 + cv.text_width(label, Canvas::s(11.0), false) / DENSITY as f32 + 16.0;
        }
        top += 20.0;
    }
    let ticks: Vec<f64> = {
        let mut t = Vec::new();
        let mut v = lo;
        while v <= hi + step * 1e-9 && t.len() < 20 {
            t.push(v);
            v += step;
        }
        t
    };
    let tick_texts: Vec<String> = ticks
        .iter()
        .map(|t| tick_label(&f, *t, y_settings))
        .collect();
    let horizontal = spec.kind == ChartKind::HBar;
    let n = categories.len() as f32;
    if horizontal {
        let label_w = categories
            .iter()
            .map(|c| cv.text_width(c, Canvas::s(11.0), false) / DENSITY as f32)
            .fold(0.0, f32::max)
            .min(180.0);
        let (left, right, bottom) = (12.0 + label_w + 8.0, w - 24.0, h - 28.0);
        let span = (hi - lo) as f32;
        let xpos = |v: f64| left + ((v - lo) as f32 / span) * (right - left);
        for (t, text) in ticks.iter().zip(&tick_texts) {
            let x = xpos(*t);
            cv.line(&[(x, top), (x, bottom)], GRID, 1.0);
            cv.text(text, x, bottom + 16.0, 10.0, MUTED, 0.5, false);
        }
        let band = (bottom - top) / n;
        let bar = (band * 0.7) / ys.len() as f32;
        for (i, cat) in categories.iter().enumerate() {
            let y0 = top + band * i as f32 + band * 0.15;
            let label = cv.fit(cat, 11.0, label_w);
            cv.text(
                &label,
                left - 6.0,
                y0 + band * 0.35 + 4.0,
                11.0,
                TEXT,
                1.0,
                false,
            );
            for (k, s) in series.iter().enumerate() {
                if let Some(v) = s[i] {
                    let (a, b) = (xpos(0f64.max(lo)), xpos(v));
                    cv.rect(
                        a.min(b),
                        y0 + bar * k as f32,
                        (b - a).abs(),
                        bar * 0.92,
                        PALETTE[k % PALETTE.len()],
                    );
                }
            }
        }
        cv.line(
            &[(xpos(0f64.max(lo)), top), (xpos(0f64.max(lo)), bottom)],
            MUTED,
            1.0,
        );
    } else {
        let tick_w = tick_texts
            .iter()
            .map(|t| cv.text_width(t, Canvas::s(10.0), false) / DENSITY as f32)
            .fold(0.0, f32::max);
        let (left, right, bottom) = (12.0 + tick_w + 8.0, w - 16.0, h - 34.0);
        let span = (hi - lo) as f32;
        let ypos = |v: f64| bottom - ((v - lo) as f32 / span) * (bottom - top);
        for (t, text) in ticks.iter().zip(&tick_texts) {
            let y = ypos(*t);
            cv.line(&[(left, y), (right, y)], GRID, 1.0);
            cv.text(text, left - 6.0, y + 4.0, 10.0, MUTED, 1.0, false);
        }
        let band = (right - left) / n;
        // Label every k-th category so labels do not overlap.
        let widest = categories
            .iter()
            .map(|c| cv.text_width(c, Canvas::s(10.0), false) / DENSITY as f32)
            .fold(0.0, f32::max)
            .min(120.0);
        let every = ((widest + 8.0) / band).ceil().max(1.0) as usize;
        for (i, cat) in categories.iter().enumerate() {
            if i % every == 0 {
                let cx = left + band * (i as f32 + 0.5);
                let label = cv.fit(cat, 10.0, (band * every as f32 - 4.0).max(20.0));
                cv.text(&label, cx, bottom + 16.0, 10.0, TEXT, 0.5, false);
            }
        }
        if spec.kind == ChartKind::Bar {
            let bar = (band * 0.7) / ys.len() as f32;
            for (k, s) in series.iter().enumerate() {
                for (i, v) in s.iter().enumerate() {
                    if let Some(v) = v {
                        let x0 = left + band * i as f32 + band * 0.15 + bar * k as f32;
                        let (a, b) = (ypos(0f64.max(lo)), ypos(*v));
                        cv.rect(
                            x0,
                            a.min(b),
                            bar * 0.92,
                            (a - b).abs(),
                            PALETTE[k % PALETTE.len()],
                        );
                    }
                }
            }
        } else {
            for (k, s) in series.iter().enumerate() {
                let c = PALETTE[k % PALETTE.len()];
                let points: Vec<(f32, f32)> = s
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (left + band * (i as f32 + 0.5), ypos(v))))
                    .collect();
                cv.line(&points, c, 2.0);
                if points.len() <= 60 {
                    for (x, y) in &points {
                        cv.dot(*x, *y, 2.5, c);
                    }
                }
            }
        }
        cv.line(
            &[(left, ypos(0f64.max(lo))), (right, ypos(0f64.max(lo)))],
            MUTED,
            1.0,
        );
    }
    let png = cv.pixmap.encode_png().ok()?;
    Some(ChartImage {
        png,
        width: WIDTH,
        height: HEIGHT,
        alt: alt_text(&title, &categories, &series[0], &f, section, ys[0].1),
    })
}

/// "Revenue by status: paid €4,091.27, shipped €1,020.00, pending €88.10": the chart's name and
/// its top three values, for readers who do not load images.
fn alt_text(
    title: &str,
    categories: &[String],
    first: &[Option<f64>],
    f: &Formatter,
    section: &SectionResult,
    y: &str,
) -> String {
    let mut pairs: Vec<(&String, f64)> = categories
        .iter()
        .zip(first)
        .filter_map(|(c, v)| v.map(|v| (c, v)))
        .collect();
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let settings = section.display.column(y).map(|s| ColumnSettings {
        scale: 1.0,
        ..s.clone()
    });
    let top: Vec<String> = pairs
        .iter()
        .take(3)
        .map(|(c, v)| format!("{c} {}", f.value(&Value::Float(*v), settings.as_ref())))
        .collect();
    format!("Chart: {title}. Highest: {}", top.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_nice() {
        assert_eq!(nice_axis(0.0, 4091.27), (0.0, 5000.0, 1000.0));
        assert_eq!(nice_axis(-3.0, 7.0), (-4.0, 8.0, 2.0));
        let (lo, hi, step) = nice_axis(5.0, 5.0);
        assert!(lo <= 0.0 && hi >= 5.0 && step > 0.0);
    }
}
