//! Outliers (format 2.0): the elements of a clustered tensor stored exactly, beside its
//! blocks. They are chosen before scaling ([`select_outliers`]), set to zero for scaling and
//! clustering, and written over the decoded values by every reader.

/// The `floor(fraction * numel)` elements of the row-major `rows x cols` matrix `x` that are
/// largest relative to their row: by `|x| / rms(row)`, ties broken by the lower position;
/// returned in increasing order. Those are the weights a shared codebook serves worst (a
/// codebook fitted by squared error spends no codeword on a handful of extreme values, and
/// with row scales an extreme value also squeezes the rest of its row). None for tensors of
/// more than `2^32` elements (positions are stored as U32).
pub fn select_outliers(x: &[f32], rows: usize, cols: usize, fraction: f64) -> Vec<u32> {
    let numel = x.len();
    debug_assert_eq!(numel, rows * cols);
    let n = ((fraction * numel as f64).floor() as usize).min(numel);
    if n == 0 || numel > u32::MAX as usize + 1 {
        return Vec::new();
    }
    let mut score = vec![0f32; numel];
    for (r, row) in x.chunks_exact(cols.max(1)).enumerate().take(rows) {
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / cols as f64;
        let inv = if ms > 0.0 { 1.0 / ms.sqrt() } else { 0.0 };
        for (o, &v) in score[r * cols..(r + 1) * cols].iter_mut().zip(row) {
            *o = (f64::from(v.abs()) * inv) as f32;
        }
    }
    // The n-th largest score; then everything above it, and ties at it by position.
    let mut tmp = score.clone();
    let (_, &mut thr, _) = tmp.select_nth_unstable_by(numel - n, |a, b| a.total_cmp(b));
    drop(tmp);
    let above = score.iter().filter(|&&v| v > thr).count();
    let mut ties = n - above;
    let mut out = Vec::with_capacity(n);
    for (p, &v) in score.iter().enumerate() {
        if v > thr || (v == thr && ties > 0) {
            if v == thr {
                ties -= 1;
            }
            out.push(p as u32);
        }
    }
    debug_assert_eq!(out.len(), n);
    out
}

/// The outliers of one tensor: positions in the row-major 2-D view (increasing) and their
/// exact values (as f32, which holds every clusterable dtype exactly).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outliers {
    /// Element positions, increasing.
    pub positions: Vec<u32>,
    /// The value at each position.
    pub values: Vec<f32>,
}

impl Outliers {
    /// Takes the outliers [`select_outliers`] picks for `fraction` out of `x` (`rows x cols`):
    /// records their values and sets them to zero in `x`, so that scaling and clustering do
    /// not see them. None for `fraction == 0`.
    pub fn take(x: &mut [f32], rows: usize, cols: usize, fraction: f64) -> Outliers {
        let positions = select_outliers(x, rows, cols, fraction);
        let values = positions.iter().map(|&p| x[p as usize]).collect();
        for &p in &positions {
            x[p as usize] = 0.0;
        }
        Outliers { positions, values }
    }

    /// Number of outliers.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Sets the outliers' positions of `x` (the tensor's 2-D view) to zero.
    pub fn zero_in(&self, x: &mut [f32]) {
        for &p in &self.positions {
            x[p as usize] = 0.0;
        }
    }

    /// The stored bytes: positions as little-endian U32, values as little-endian F32.
    pub fn to_bytes(&self) -> (Vec<u8>, Vec<u8>) {
        let index = self
            .positions
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        let value = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        (index, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_the_largest_relative_to_their_row_in_order() {
        // Row 0 has small values and one relatively large one; row 1 is large everywhere.
        let x = [0.1, -0.1, 0.9, 0.1, 10.0, 10.0, -11.0, 10.0];
        assert_eq!(select_outliers(&x, 2, 4, 0.25), vec![2, 6]);
        assert_eq!(select_outliers(&x, 2, 4, 0.125), vec![2]);
        assert!(select_outliers(&x, 2, 4, 0.1).is_empty());
        // Ties go to the lower position.
        assert_eq!(select_outliers(&[1.0; 4], 1, 4, 0.5), vec![0, 1]);
    }

    #[test]
    fn take_zeroes_what_it_records() {
        let mut x = vec![0.1, -0.1, 0.9, 0.1, 10.0, 10.0, -11.0, 10.0];
        let o = Outliers::take(&mut x, 2, 4, 0.25);
        assert_eq!(o.positions, vec![2, 6]);
        assert_eq!(o.values, vec![0.9, -11.0]);
        assert_eq!(x, vec![0.1, -0.1, 0.0, 0.1, 10.0, 10.0, 0.0, 10.0]);
        assert_eq!(o.len(), 2);
        let mut y = vec![1.0; 8];
        o.zero_in(&mut y);
        assert_eq!(y, vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]);
        let (ib, vb) = o.to_bytes();
        assert_eq!(ib, [2u32.to_le_bytes(), 6u32.to_le_bytes()].concat());
        assert_eq!(
            vb,
            [0.9f32.to_le_bytes(), (-11.0f32).to_le_bytes()].concat()
        );
        let none = Outliers::take(&mut x, 2, 4, 0.0);
        assert!(none.is_empty() && none == Outliers::default());
    }
}
