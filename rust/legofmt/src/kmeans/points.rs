//! [`Points`]: the set of points a pass runs over, either all rows of the data or the rows a
//! sample lists (the sample phase gathers its points a chunk at a time instead of copying the
//! sample).

/// A set of points: all rows of `data`, or the rows of `data` listed in `idx`.
#[derive(Clone, Copy)]
pub(crate) enum Points<'a> {
    /// Every row of the slice, in order.
    Dense(&'a [f32]),
    /// The rows listed, in the order listed.
    Indexed(&'a [f32], &'a [u32]),
}

impl<'a> Points<'a> {
    /// Number of points.
    pub(crate) fn len(&self, dim: usize) -> usize {
        match self {
            Points::Dense(d) => d.len() / dim,
            Points::Indexed(_, idx) => idx.len(),
        }
    }

    /// Point `p`.
    #[inline(always)]
    pub(crate) fn row(&self, p: usize, dim: usize) -> &'a [f32] {
        match *self {
            Points::Dense(d) => &d[p * dim..(p + 1) * dim],
            Points::Indexed(d, idx) => {
                let i = idx[p] as usize;
                &d[i * dim..(i + 1) * dim]
            }
        }
    }
}
