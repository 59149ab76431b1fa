//! Training curves: a CSV row every few steps and an SVG chart of loss and accuracy.

use std::io::Write;
use std::path::Path;

use plotters::prelude::*;

use crate::error::TrainerError;

/// One logged point of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct CurveRow {
    /// Steps done.
    pub step: u64,
    /// Mean training loss since the previous row.
    pub loss: f32,
    /// Mean training query accuracy since the previous row.
    pub train_accuracy: f32,
    /// Learning rate at this step.
    pub lr: f32,
    /// Training tasks per second since the previous row.
    pub tasks_per_second: f32,
    /// Steps skipped (non-finite) so far.
    pub skipped: u64,
    /// Validation accuracy and interval, when validated at this step.
    pub validation: Option<(f32, f32)>,
}

const HEADER: &str = "step,loss,train_accuracy,lr,tasks_per_second,skipped,val_accuracy,val_ci95";

/// The curves of a run.
#[derive(Clone, Debug, Default)]
pub struct Curves {
    /// Rows in step order.
    pub rows: Vec<CurveRow>,
}

impl Curves {
    /// Reads the rows of an earlier run up to `step` (a resumed run continues them); a missing
    /// file gives no rows.
    pub fn resume(path: &Path, step: u64) -> Result<Curves, TrainerError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Curves::default()),
            Err(e) => return Err(TrainerError::io(path, e)),
        };
        let mut rows = Vec::new();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let parse = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
            let (Some(s), Some(loss), Some(acc), Some(lr), Some(tps), Some(skipped)) =
                (parse(0), parse(1), parse(2), parse(3), parse(4), parse(5))
            else {
                continue; // a row cut short by a crash
            };
            if s as u64 > step {
                break;
            }
            rows.push(CurveRow {
                step: s as u64,
                loss: loss as f32,
                train_accuracy: acc as f32,
                lr: lr as f32,
                tasks_per_second: tps as f32,
                skipped: skipped as u64,
                validation: parse(6).zip(parse(7)).map(|(a, c)| (a as f32, c as f32)),
            });
        }
        Ok(Curves { rows })
    }

    /// Writes all rows as CSV (atomically).
    pub fn write_csv(&self, path: &Path) -> Result<(), TrainerError> {
        let mut out = Vec::new();
        writeln!(out, "{HEADER}").map_err(|e| TrainerError::io(path, e))?;
        for r in &self.rows {
            let (va, vc) = match r.validation {
                Some((a, c)) => (a.to_string(), c.to_string()),
                None => (String::new(), String::new()),
            };
            writeln!(
                out,
                "{},{},{},{},{},{},{va},{vc}",
                r.step, r.loss, r.train_accuracy, r.lr, r.tasks_per_second, r.skipped
            )
            .map_err(|e| TrainerError::io(path, e))?;
        }
        formats::write_atomic(path, &out).map_err(|e| TrainerError::io(path, e))
    }

    /// Draws loss (top) and training/validation accuracy (bottom) against steps as SVG.
    pub fn write_svg(&self, path: &Path, title: &str) -> Result<(), TrainerError> {
        let chart_err = |e: &dyn std::fmt::Display| TrainerError::Chart {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 700)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| chart_err(&e))?;
            let root = root
                .titled(title, ("sans-serif", 20))
                .map_err(|e| chart_err(&e))?;
            let (top, bottom) = root.split_vertically(330);
            let last = self.rows.last().map_or(1, |r| r.step.max(1));
            let max_loss = self
                .rows
                .iter()
                .map(|r| r.loss)
                .filter(|l| l.is_finite())
                .fold(0.0f32, f32::max);

            let mut loss = ChartBuilder::on(&top)
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0u64..last, 0f32..(max_loss * 1.05).max(1e-3))
                .map_err(|e| chart_err(&e))?;
            loss.configure_mesh()
                .x_desc("step")
                .y_desc("training loss")
                .draw()
                .map_err(|e| chart_err(&e))?;
            loss.draw_series(LineSeries::new(
                self.rows
                    .iter()
                    .filter(|r| r.loss.is_finite())
                    .map(|r| (r.step, r.loss)),
                &RED,
            ))
            .map_err(|e| chart_err(&e))?;

            let mut acc = ChartBuilder::on(&bottom)
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0u64..last, 0f32..1f32)
                .map_err(|e| chart_err(&e))?;
            acc.configure_mesh()
                .x_desc("step")
                .y_desc("accuracy")
                .draw()
                .map_err(|e| chart_err(&e))?;
            acc.draw_series(LineSeries::new(
                self.rows.iter().map(|r| (r.step, r.train_accuracy)),
                &BLUE,
            ))
            .map_err(|e| chart_err(&e))?
            .label("train (queries)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
            acc.draw_series(LineSeries::new(
                self.rows
                    .iter()
                    .filter_map(|r| r.validation.map(|(a, _)| (r.step, a))),
                &GREEN,
            ))
            .map_err(|e| chart_err(&e))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
            acc.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| chart_err(&e))?;
            root.present().map_err(|e| chart_err(&e))?;
        }
        formats::write_atomic(path, svg.as_bytes()).map_err(|e| TrainerError::io(path, e))
    }
}
