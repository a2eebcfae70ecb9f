//! Parallel helpers that fall back to plain loops without the `parallel` feature.
//!
//! All parallel work in the crate goes through these two functions, so the crate builds and
//! behaves identically (bit for bit) with `--no-default-features`; only the speed differs.
//! Work is always split into the same fixed chunks whatever the thread count, and partial
//! results are combined in chunk order, so results never depend on the number of threads.

/// Calls `f(chunk_index, chunk)` for each `chunk_len`-sized chunk of `data` (the last may be shorter).
pub(crate) fn for_each_chunk_mut<T, F>(data: &mut [T], chunk_len: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let chunk_len = chunk_len.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
    #[cfg(not(feature = "parallel"))]
    {
        for (i, c) in data.chunks_mut(chunk_len).enumerate() {
            f(i, c);
        }
    }
}

/// Maps `f` over `0..n` and returns the results in order.
pub(crate) fn map_range<R, F>(n: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync + Send,
{
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        (0..n).map(f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_in_order() {
        let mut v = vec![0usize; 103];
        for_each_chunk_mut(&mut v, 10, |ci, c| {
            for (j, x) in c.iter_mut().enumerate() {
                *x = ci * 10 + j;
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
        assert_eq!(map_range(5, |i| i * i), vec![0, 1, 4, 9, 16]);
    }
}
