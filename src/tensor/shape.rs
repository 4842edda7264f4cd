//! Tensor shapes: up to [`MAX_RANK`] dimensions, row-major (C order), with
//! element counts and byte sizes checked against overflow.

use std::fmt;

use bytemuck::{Pod, Zeroable};

use super::dtype::{DType, QUANT_BLOCK};
use crate::error::{Error, Result};

/// The largest rank a tensor can have.
pub const MAX_RANK: usize = 8;

/// The shape of a tensor: its dimensions, outermost first.
///
/// A `Shape` is a plain `Pod` value (72 bytes) so it can be stored in a tensor
/// header as it is. Its element count and its byte size for every dtype are
/// known to fit in a `u64` once it has been built through [`Shape::new`].
/// A rank-0 shape is a scalar (one element).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(C)]
pub struct Shape {
    rank: u64,
    dims: [u64; MAX_RANK],
}

impl Shape {
    /// A shape from its dimensions, outermost first.
    ///
    /// # Errors
    /// [`Error::RankTooLarge`] for more than [`MAX_RANK`] dimensions;
    /// [`Error::ShapeOverflow`] when the element count, or the byte size
    /// for the widest dtype (16 bytes), does not fit in a `u64`.
    ///
    /// # Examples
    /// ```
    /// let s = psyne::Shape::new(&[2u64, 3, 4])?;
    /// assert_eq!(s.len(), 24);
    /// assert_eq!(s.strides(), [12, 4, 1]);
    /// # Ok::<(), psyne::Error>(())
    /// ```
    pub fn new<D: Copy + Into<u64>>(dims: &[D]) -> Result<Shape> {
        if dims.len() > MAX_RANK {
            return Err(Error::RankTooLarge {
                rank: dims.len(),
                max: MAX_RANK,
            });
        }
        let mut s = Shape {
            rank: dims.len() as u64,
            dims: [0; MAX_RANK],
        };
        for (slot, d) in s.dims.iter_mut().zip(dims) {
            *slot = (*d).into();
        }
        s.validate()?;
        Ok(s)
    }

    /// A shape from `usize` dimensions (the common case in Rust code).
    ///
    /// # Errors
    /// As [`Shape::new`].
    pub fn from_usize(dims: &[usize]) -> Result<Shape> {
        let v: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        Shape::new(&v)
    }

    /// A rank-1 shape.
    ///
    /// # Panics
    /// If `n` is 2^59 or more (its byte size for 16-byte elements would
    /// overflow; no such buffer exists).
    pub fn vector(n: usize) -> Shape {
        assert!((n as u64) < 1 << 59, "vector length {n} overflows");
        let mut dims = [0; MAX_RANK];
        dims[0] = n as u64;
        Shape { rank: 1, dims }
    }

    /// A rank-2 shape (`rows x cols`).
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when `rows * cols` elements overflow.
    pub fn matrix(rows: usize, cols: usize) -> Result<Shape> {
        Shape::new(&[rows as u64, cols as u64])
    }

    /// Checks the invariants of a shape read from memory: rank within
    /// bounds, unused dimensions zero, sizes without overflow.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.rank > MAX_RANK as u64 {
            return Err(Error::RankTooLarge {
                rank: self.rank as usize,
                max: MAX_RANK,
            });
        }
        if self.dims[self.rank as usize..].iter().any(|&d| d != 0) {
            return Err(Error::ShapeOverflow {
                dims: self.dims.to_vec(),
            });
        }
        let n = self
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        match n.and_then(|n| n.checked_mul(16)) {
            Some(_) => Ok(()),
            None => Err(Error::ShapeOverflow {
                dims: self.dims().to_vec(),
            }),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.rank as usize]
    }

    /// Number of elements (1 for a scalar, 0 if any dimension is 0).
    pub fn len(&self) -> usize {
        self.dims().iter().product::<u64>() as usize
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Contiguous row-major strides, in elements.
    pub fn strides(&self) -> Vec<u64> {
        let mut strides = vec![1u64; self.rank()];
        for i in (0..self.rank().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.dims[i + 1];
        }
        strides
    }

    /// Flat index of a multi-index, or `None` if it is out of bounds or has
    /// the wrong rank.
    pub fn offset_of(&self, index: &[usize]) -> Option<usize> {
        if index.len() != self.rank() {
            return None;
        }
        let mut flat = 0usize;
        for (&i, &d) in index.iter().zip(self.dims()) {
            if i as u64 >= d {
                return None;
            }
            flat = flat * d as usize + i;
        }
        Some(flat)
    }

    /// Bytes needed to store a tensor of this shape and dtype.
    ///
    /// For [`DType::QInt8`] this is the values alone (one byte each, the
    /// per-tensor case); a per-channel QInt8 tensor also stores its tables,
    /// see [`quant::qint8_storage_size`](crate::tensor::quant::qint8_storage_size).
    /// For the block kinds it is the f16 scales (padded to 4 bytes) followed
    /// by the packed values, as described in `docs/layout.md`. `Raw` counts
    /// one byte per element.
    pub fn byte_size(&self, dtype: DType) -> u64 {
        let n = self.len() as u64;
        match dtype {
            DType::QInt8 | DType::Raw => n,
            DType::Q8Block => block_layout(n, QUANT_BLOCK as u64).1,
            DType::Q4Block => block_layout(n, QUANT_BLOCK as u64 / 2).1,
            // validate() ensured n * 16 fits.
            d => n * d.element_size().expect("plain dtype") as u64,
        }
    }
}

/// For `n` values in blocks of [`QUANT_BLOCK`], each block taking
/// `block_bytes` of packed values: returns (offset of the packed values,
/// total bytes). The f16 scales come first, padded to a multiple of 4 bytes.
pub(crate) fn block_layout(n: u64, block_bytes: u64) -> (u64, u64) {
    let blocks = n.div_ceil(QUANT_BLOCK as u64);
    let values_at = (blocks * 2).next_multiple_of(4);
    (values_at, values_at + blocks * block_bytes)
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shape{:?}", self.dims())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scalar_and_empty() {
        let s = Shape::new::<u64>(&[]).unwrap();
        assert_eq!((s.rank(), s.len()), (0, 1));
        let e = Shape::new(&[3u64, 0, 2]).unwrap();
        assert!(e.is_empty());
        assert_eq!(e.byte_size(DType::F64), 0);
    }

    #[test]
    fn rank_limit() {
        assert!(Shape::new(&[1u64; 8]).is_ok());
        assert!(matches!(
            Shape::new(&[1u64; 9]),
            Err(Error::RankTooLarge { rank: 9, max: 8 })
        ));
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(matches!(
            Shape::new(&[u64::MAX, 2]),
            Err(Error::ShapeOverflow { .. })
        ));
        // Element count fits but 16-byte elements would not.
        assert!(matches!(
            Shape::new(&[1u64 << 61]),
            Err(Error::ShapeOverflow { .. })
        ));
        assert!(Shape::new(&[1u64 << 59]).is_ok());
    }

    #[test]
    fn block_sizes() {
        let s = Shape::vector(33); // two blocks
        assert_eq!(s.byte_size(DType::Q8Block), 4 + 64);
        assert_eq!(s.byte_size(DType::Q4Block), 4 + 32);
        let s = Shape::vector(96); // three blocks: 6 bytes of scales -> 8
        assert_eq!(s.byte_size(DType::Q8Block), 8 + 96);
        assert_eq!(s.byte_size(DType::QInt8), 96);
    }

    #[test]
    fn garbage_from_memory_is_rejected() {
        let mut s = Shape::vector(4);
        s.dims[5] = 1; // beyond rank
        assert!(s.validate().is_err());
        s = Shape::vector(4);
        s.rank = 9;
        assert!(s.validate().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]
        #[test]
        fn strides_and_offsets_agree(dims in proptest::collection::vec(1u64..5, 0..=6)) {
            let s = Shape::new(&dims).unwrap();
            let strides = s.strides();
            let n = s.len();
            // Walk every multi-index in row-major order: offset_of must count 0..n
            // and equal the dot product with the strides.
            let mut idx = vec![0usize; s.rank()];
            for flat in 0..n {
                prop_assert_eq!(s.offset_of(&idx), Some(flat));
                let dot: u64 = idx.iter().zip(&strides).map(|(&i, &st)| i as u64 * st).sum();
                prop_assert_eq!(dot as usize, flat);
                for k in (0..idx.len()).rev() {
                    idx[k] += 1;
                    if (idx[k] as u64) < dims[k] { break; }
                    idx[k] = 0;
                }
            }
            if s.rank() > 0 {
                let mut oob: Vec<usize> = vec![0; s.rank()];
                oob[0] = dims[0] as usize;
                prop_assert_eq!(s.offset_of(&oob), None);
            }
        }
    }
}
