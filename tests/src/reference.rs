//! A deliberately plain f64 implementation of AWGIM.md's evaluation path, written from the
//! formulas and independently of the engine: `Vec<f64>` matrices, loops per head, the
//! generator input `z` built for all `N K` support rows as the reference code does, `W = mu`
//! formed explicitly, then `l[i] = x . W[i]`. No dropout, per-row layer norm. Tensors are
//! looked up by the names of `formats::tensors`, the file's contract.

use std::collections::HashMap;

use formats::tensors::{
    BlockNames, LayerNormNames, CA_AP, ENC_AP, ENC_CP, GENERATOR, SA_AP, SA_CP,
};
use formats::{parse, FormatError, ModelConfig, Sizes};

/// A row-major matrix of f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f64>,
}

impl Matrix {
    fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Rows of f32 features as a matrix.
    pub fn from_rows(rows: &[Vec<f32>]) -> Self {
        let cols = rows.first().map_or(0, Vec::len);
        Self {
            rows: rows.len(),
            cols,
            data: rows.iter().flatten().map(|&v| f64::from(v)).collect(),
        }
    }

    /// Entry `(r, c)`.
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    fn set(&mut self, r: usize, c: usize, v: f64) {
        self.data[r * self.cols + c] = v;
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// `self * other`.
    fn matmul(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.cols, other.rows, "inner sizes");
        let mut out = Matrix::zeros(self.rows, other.cols);
        for i in 0..self.rows {
            for j in 0..other.cols {
                let mut sum = 0.0;
                for k in 0..self.cols {
                    sum += self.at(i, k) * other.at(k, j);
                }
                out.set(i, j, sum);
            }
        }
        out
    }

    /// Columns `from..to`.
    fn columns(&self, from: usize, to: usize) -> Matrix {
        let mut out = Matrix::zeros(self.rows, to - from);
        for i in 0..self.rows {
            for j in from..to {
                out.set(i, j - from, self.at(i, j));
            }
        }
        out
    }

    /// Rows `from..to`.
    fn rows_range(&self, from: usize, to: usize) -> Matrix {
        Matrix {
            rows: to - from,
            cols: self.cols,
            data: self.data[from * self.cols..to * self.cols].to_vec(),
        }
    }

    fn transpose(&self) -> Matrix {
        let mut out = Matrix::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.set(j, i, self.at(i, j));
            }
        }
        out
    }

    fn add(&self, other: &Matrix) -> Matrix {
        let mut out = self.clone();
        for (a, b) in out.data.iter_mut().zip(&other.data) {
            *a += b;
        }
        out
    }

    fn relu(&self) -> Matrix {
        let mut out = self.clone();
        for v in &mut out.data {
            *v = v.max(0.0);
        }
        out
    }
}

/// AWGIM's weights in f64, read from a model file.
pub struct Reference {
    config: ModelConfig,
    weights: HashMap<&'static str, Matrix>,
}

impl Reference {
    /// Reads every tensor of an inference or training file (copying, any alignment).
    pub fn from_file(bytes: &[u8]) -> Result<Self, FormatError> {
        let file = parse(bytes)?;
        let config = file.config();
        let mut weights = HashMap::new();
        for spec in formats::expected_tensors(&config, file.kind()) {
            let values = file.to_vec(spec.name)?;
            let (rows, cols) = match spec.shape.as_slice() {
                [r, c] => (*r as usize, *c as usize),
                [c] => (1, *c as usize),
                _ => (1, values.len()),
            };
            weights.insert(
                spec.name,
                Matrix {
                    rows,
                    cols,
                    data: values.iter().map(|&v| f64::from(v)).collect(),
                },
            );
        }
        Ok(Self { config, weights })
    }

    fn w(&self, name: &str) -> &Matrix {
        &self.weights[name]
    }

    /// Per-row layer norm with gain and bias.
    fn layer_norm(&self, x: &Matrix, names: &LayerNormNames) -> Matrix {
        let gain = self.w(names.gain);
        let bias = self.w(names.bias);
        let eps = f64::from(self.config.ln_epsilon);
        let mut out = x.clone();
        for i in 0..x.rows {
            let row = x.row(i);
            let n = row.len() as f64;
            let mean = row.iter().sum::<f64>() / n;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            for (j, v) in row.iter().enumerate() {
                out.set(
                    i,
                    j,
                    (v - mean) / (var + eps).sqrt() * gain.data[j] + bias.data[j],
                );
            }
        }
        out
    }

    /// `block(q, k, v)` of AWGIM.md for block `b`.
    pub fn block(&self, b: &BlockNames, q: &Matrix, k: &Matrix, v: &Matrix) -> Matrix {
        let Sizes { d, h, .. } = self.config.sizes();
        let dh = d / h;
        let wq = self.w(b.wq);
        let wk = self.w(b.wk);
        let wv = self.w(b.wv);
        let wo = self.w(b.wo);
        let mut out = q.clone();
        for j in 0..h {
            let qj = q.matmul(&wq.columns(j * dh, (j + 1) * dh));
            let kj = k.matmul(&wk.columns(j * dh, (j + 1) * dh));
            let vj = v.matmul(&wv.columns(j * dh, (j + 1) * dh));
            let mut scores = qj.matmul(&kj.transpose());
            for i in 0..scores.rows {
                let row = scores.row(i).to_vec();
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = row
                    .iter()
                    .map(|s| ((s - max) / (dh as f64).sqrt()).exp())
                    .collect();
                let total: f64 = exps.iter().sum();
                for (c, e) in exps.iter().enumerate() {
                    scores.set(i, c, e / total);
                }
            }
            let aj = scores.matmul(&vj);
            out = out.add(&aj.matmul(&wo.rows_range(j * dh, (j + 1) * dh)));
        }
        let out = self.layer_norm(&out, &b.ln1);
        let ff = out.matmul(self.w(b.f1)).relu().matmul(self.w(b.f2));
        self.layer_norm(&out.add(&ff), &b.ln2)
    }

    /// Replaces every row by the mean of its class's K rows (rows class-major).
    fn class_mean_rows(&self, x: &Matrix) -> Matrix {
        let Sizes { N, K, .. } = self.config.sizes();
        let mut out = x.clone();
        for class in 0..N {
            for c in 0..x.cols {
                let mean = (0..K).map(|r| x.at(class * K + r, c)).sum::<f64>() / K as f64;
                for r in 0..K {
                    out.set(class * K + r, c, mean);
                }
            }
        }
        out
    }

    /// The generated weights `W` (N x D) for every query: `W[q][i]` for query `q`, class `i`.
    pub fn generated_weights(&self, support: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Matrix> {
        let Sizes { D, d, N, K, .. } = self.config.sizes();
        let xs = Matrix::from_rows(support);
        let xq = Matrix::from_rows(queries);
        // 1. Attentive path.
        let s = xs.matmul(self.w(ENC_AP));
        let v = self.class_mean_rows(&self.block(&SA_AP, &s, &s, &s));
        let q = xq.matmul(self.w(ENC_AP));
        let a = self.block(&CA_AP, &q, &s, &v);
        // 2. Contextual path.
        let sc = xs.matmul(self.w(ENC_CP));
        let c = self.class_mean_rows(&self.block(&SA_CP, &sc, &sc, &sc));
        // 3.-5. Generator on z = [c_bar[class(r)] ; a(x)] for all N K support rows; W = mu.
        let mut out = Vec::new();
        for query in 0..queries.len() {
            let mut z = Matrix::zeros(N * K, 2 * d);
            for r in 0..N * K {
                for j in 0..d {
                    z.set(r, j, c.at(r, j));
                    z.set(r, d + j, a.at(query, j));
                }
            }
            let hidden = z.matmul(self.w(GENERATOR.g1)).relu();
            let mu = hidden.matmul(self.w(GENERATOR.g2_mu));
            let mut w = Matrix::zeros(N, D);
            for class in 0..N {
                for col in 0..D {
                    let mean = (0..K).map(|r| mu.at(class * K + r, col)).sum::<f64>() / K as f64;
                    w.set(class, col, mean);
                }
            }
            out.push(w);
        }
        out
    }

    /// Query logits `l[i] = x . W[i]`, one row of N per query.
    pub fn logits(&self, support: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<f64>> {
        let weights = self.generated_weights(support, queries);
        queries
            .iter()
            .zip(&weights)
            .map(|(x, w)| {
                (0..w.rows)
                    .map(|i| x.iter().zip(w.row(i)).map(|(&x, w)| f64::from(x) * w).sum())
                    .collect()
            })
            .collect()
    }
}
