//! Typed views: a [`Shape`] laid over a slice of [`Element`]s.
//!
//! [`Tensor`] / [`TensorMut`] are the general n-d views. [`Vector`] and
//! [`Matrix`] (and their `Mut` forms) fix the rank and add row access; the
//! aliases [`FloatVector`], [`DoubleMatrix`], [`Int8Vector`] and
//! [`UInt8Vector`] name the common cases. [`Matrix4x4f`] is a fixed-size
//! `Pod` value for transforms.
//!
//! Views borrow their bytes; they never copy. Building one checks that the
//! slice holds exactly the elements the shape needs.

use std::ops::{Deref, DerefMut};

use bytemuck::{Pod, Zeroable};

use super::dtype::{DType, Element};
use super::shape::Shape;
use crate::error::{Error, Result};

fn check_len(shape: &Shape, len: usize) -> Result<()> {
    if shape.len() != len {
        return Err(Error::LengthMismatch {
            expected: shape.len() as u64,
            actual: len as u64,
            unit: "elements",
        });
    }
    Ok(())
}

fn check_rank(shape: &Shape, rank: usize) -> Result<()> {
    if shape.rank() != rank {
        return Err(Error::RankMismatch {
            expected: rank,
            found: shape.rank(),
        });
    }
    Ok(())
}

/// A read-only n-d view of elements of type `T`.
#[derive(Copy, Clone, Debug)]
pub struct Tensor<'a, T: Element> {
    shape: Shape,
    data: &'a [T],
}

impl<'a, T: Element> Tensor<'a, T> {
    /// A view of `data` with `shape`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `data.len()` is not `shape.len()`.
    pub fn new(shape: Shape, data: &'a [T]) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(Tensor { shape, data })
    }

    /// A view of raw bytes holding elements of `T`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the byte count is not the shape's size;
    /// [`Error::InvalidHandle`] if `bytes` is not aligned for `T`.
    pub fn from_bytes(shape: Shape, bytes: &'a [u8]) -> Result<Self> {
        let data = cast_bytes::<T>(&shape, bytes)?;
        Tensor::new(shape, data)
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dtype (`T::DTYPE`).
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// The elements in row-major order.
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }

    /// The element at a multi-index, or `None` if out of bounds.
    pub fn get(&self, index: &[usize]) -> Option<&'a T> {
        self.shape.offset_of(index).map(|i| &self.data[i])
    }

    /// The elements as bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        bytemuck::cast_slice(self.data)
    }
}

impl<T: Element> Deref for Tensor<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.data
    }
}

/// A writable n-d view of elements of type `T`.
#[derive(Debug)]
pub struct TensorMut<'a, T: Element> {
    shape: Shape,
    data: &'a mut [T],
}

impl<'a, T: Element> TensorMut<'a, T> {
    /// A writable view of `data` with `shape`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `data.len()` is not `shape.len()`.
    pub fn new(shape: Shape, data: &'a mut [T]) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(TensorMut { shape, data })
    }

    /// A writable view of raw bytes holding elements of `T`.
    ///
    /// # Errors
    /// As [`Tensor::from_bytes`].
    pub fn from_bytes(shape: Shape, bytes: &'a mut [u8]) -> Result<Self> {
        cast_bytes::<T>(&shape, bytes)?;
        TensorMut::new(shape, bytemuck::cast_slice_mut(bytes))
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The elements, writable, in row-major order.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.data
    }

    /// Gives up the view and returns the whole writable slice.
    pub fn into_mut_slice(self) -> &'a mut [T] {
        self.data
    }

    /// A read-only view of the same elements.
    pub fn as_tensor(&self) -> Tensor<'_, T> {
        Tensor {
            shape: self.shape,
            data: self.data,
        }
    }

    /// The element at a multi-index, writable, or `None` if out of bounds.
    pub fn get_mut(&mut self, index: &[usize]) -> Option<&mut T> {
        self.shape.offset_of(index).map(|i| &mut self.data[i])
    }

    /// Copies `src` into the tensor.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `src.len()` is not the element count.
    pub fn copy_from_slice(&mut self, src: &[T]) -> Result<()> {
        check_len(&self.shape, src.len())?;
        self.data.copy_from_slice(src);
        Ok(())
    }
}

impl<T: Element> Deref for TensorMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.data
    }
}

impl<T: Element> DerefMut for TensorMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.data
    }
}

fn cast_bytes<'b, T: Element>(shape: &Shape, bytes: &'b [u8]) -> Result<&'b [T]> {
    let need = shape.byte_size(T::DTYPE);
    if bytes.len() as u64 != need {
        return Err(Error::LengthMismatch {
            expected: need,
            actual: bytes.len() as u64,
            unit: "bytes",
        });
    }
    bytemuck::try_cast_slice(bytes).map_err(|e| {
        Error::InvalidHandle(format!(
            "bytes at {:p} cannot hold {}: {e}",
            bytes.as_ptr(),
            T::DTYPE
        ))
    })
}

/// A read-only rank-1 view.
#[derive(Copy, Clone, Debug)]
pub struct Vector<'a, T: Element>(Tensor<'a, T>);

/// A writable rank-1 view.
#[derive(Debug)]
pub struct VectorMut<'a, T: Element>(TensorMut<'a, T>);

/// A read-only rank-2 view (`rows x cols`, row-major) with row access.
#[derive(Copy, Clone, Debug)]
pub struct Matrix<'a, T: Element>(Tensor<'a, T>);

/// A writable rank-2 view with row access.
#[derive(Debug)]
pub struct MatrixMut<'a, T: Element>(TensorMut<'a, T>);

/// A vector of `f32`.
pub type FloatVector<'a> = Vector<'a, f32>;
/// A matrix of `f64`.
pub type DoubleMatrix<'a> = Matrix<'a, f64>;
/// A vector of `i8`.
pub type Int8Vector<'a> = Vector<'a, i8>;
/// A vector of `u8`.
pub type UInt8Vector<'a> = Vector<'a, u8>;

impl<'a, T: Element> Vector<'a, T> {
    /// A vector over `data`.
    pub fn new(data: &'a [T]) -> Self {
        Vector(Tensor {
            shape: Shape::vector(data.len()),
            data,
        })
    }

    /// The elements.
    pub fn as_slice(&self) -> &'a [T] {
        self.0.data
    }

    /// The general view.
    pub fn as_tensor(&self) -> Tensor<'a, T> {
        self.0
    }
}

impl<'a, T: Element> TryFrom<Tensor<'a, T>> for Vector<'a, T> {
    type Error = Error;
    fn try_from(t: Tensor<'a, T>) -> Result<Self> {
        check_rank(&t.shape, 1)?;
        Ok(Vector(t))
    }
}

impl<T: Element> Deref for Vector<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.data
    }
}

impl<'a, T: Element> VectorMut<'a, T> {
    /// A writable vector over `data`.
    pub fn new(data: &'a mut [T]) -> Self {
        VectorMut(TensorMut {
            shape: Shape::vector(data.len()),
            data,
        })
    }
}

impl<'a, T: Element> TryFrom<TensorMut<'a, T>> for VectorMut<'a, T> {
    type Error = Error;
    fn try_from(t: TensorMut<'a, T>) -> Result<Self> {
        check_rank(&t.shape, 1)?;
        Ok(VectorMut(t))
    }
}

impl<T: Element> Deref for VectorMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.data
    }
}

impl<T: Element> DerefMut for VectorMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.0.data
    }
}

impl<'a, T: Element> Matrix<'a, T> {
    /// A `rows x cols` matrix over `data`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `data.len() != rows * cols`.
    pub fn new(rows: usize, cols: usize, data: &'a [T]) -> Result<Self> {
        Ok(Matrix(Tensor::new(Shape::matrix(rows, cols)?, data)?))
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.0.shape.dims()[0] as usize
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.0.shape.dims()[1] as usize
    }

    /// Row `i`, or `None` if out of range.
    pub fn row(&self, i: usize) -> Option<&'a [T]> {
        let c = self.cols();
        (i < self.rows()).then(|| &self.0.data[i * c..(i + 1) * c])
    }

    /// The rows in order. A matrix with zero columns yields `rows()` empty rows.
    pub fn iter_rows(&self) -> impl ExactSizeIterator<Item = &'a [T]> + 'a {
        let (r, c, data) = (self.rows(), self.cols(), self.0.data);
        (0..r).map(move |i| &data[i * c..(i + 1) * c])
    }

    /// The element at (`row`, `col`), or `None` if out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<&'a T> {
        self.0.get(&[row, col])
    }

    /// The general view.
    pub fn as_tensor(&self) -> Tensor<'a, T> {
        self.0
    }
}

impl<'a, T: Element> TryFrom<Tensor<'a, T>> for Matrix<'a, T> {
    type Error = Error;
    fn try_from(t: Tensor<'a, T>) -> Result<Self> {
        check_rank(&t.shape, 2)?;
        Ok(Matrix(t))
    }
}

impl<T: Element> Deref for Matrix<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.data
    }
}

impl<'a, T: Element> MatrixMut<'a, T> {
    /// A writable `rows x cols` matrix over `data`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `data.len() != rows * cols`.
    pub fn new(rows: usize, cols: usize, data: &'a mut [T]) -> Result<Self> {
        Ok(MatrixMut(TensorMut::new(Shape::matrix(rows, cols)?, data)?))
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.0.shape.dims()[0] as usize
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.0.shape.dims()[1] as usize
    }

    /// Row `i`, writable, or `None` if out of range.
    pub fn row_mut(&mut self, i: usize) -> Option<&mut [T]> {
        let c = self.cols();
        (i < self.rows()).then(|| &mut self.0.data[i * c..(i + 1) * c])
    }

    /// A read-only view of the same matrix.
    pub fn as_matrix(&self) -> Matrix<'_, T> {
        Matrix(self.0.as_tensor())
    }
}

impl<'a, T: Element> TryFrom<TensorMut<'a, T>> for MatrixMut<'a, T> {
    type Error = Error;
    fn try_from(t: TensorMut<'a, T>) -> Result<Self> {
        check_rank(&t.shape, 2)?;
        Ok(MatrixMut(t))
    }
}

impl<T: Element> Deref for MatrixMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.data
    }
}

impl<T: Element> DerefMut for MatrixMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.0.data
    }
}

/// A 4x4 `f32` matrix, row-major, stored as 16 contiguous floats (64 bytes).
///
/// It is `Pod`, so a `[4, 4]` f32 tensor can be read as one with
/// [`Matrix4x4f::from_tensor`] without copying.
#[derive(Copy, Clone, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Matrix4x4f(pub [[f32; 4]; 4]);

impl Matrix4x4f {
    /// The identity matrix.
    pub const IDENTITY: Matrix4x4f = Matrix4x4f([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);

    /// The shape of every `Matrix4x4f`: `[4, 4]`.
    pub fn shape() -> Shape {
        Shape::new(&[4u64, 4]).expect("4x4 fits")
    }

    /// Reads a `[4, 4]` f32 tensor in place.
    ///
    /// # Errors
    /// [`Error::RankMismatch`] / [`Error::LengthMismatch`] for any other shape.
    pub fn from_tensor<'a>(t: &Tensor<'a, f32>) -> Result<&'a Matrix4x4f> {
        check_rank(t.shape(), 2)?;
        if t.shape().dims() != [4, 4] {
            return Err(Error::LengthMismatch {
                expected: 16,
                actual: t.len() as u64,
                unit: "elements",
            });
        }
        let arr: &[f32; 16] = t.as_slice().try_into().expect("16 elements");
        Ok(bytemuck::cast_ref(arr))
    }

    /// Row `i` (panics if `i >= 4`, like an array index).
    pub fn row(&self, i: usize) -> [f32; 4] {
        self.0[i]
    }

    /// Matrix product `self * rhs`.
    pub fn mul(&self, rhs: &Matrix4x4f) -> Matrix4x4f {
        let mut out = [[0.0f32; 4]; 4];
        for (i, row) in out.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = (0..4).map(|k| self.0[i][k] * rhs.0[k][j]).sum();
            }
        }
        Matrix4x4f(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_checks_length() {
        let data = [1.0f32, 2.0, 3.0];
        assert!(Tensor::new(Shape::vector(3), &data[..]).is_ok());
        assert!(matches!(
            Tensor::new(Shape::vector(4), &data[..]),
            Err(Error::LengthMismatch {
                expected: 4,
                actual: 3,
                ..
            })
        ));
    }

    #[test]
    fn matrix_rows() {
        let data: Vec<f64> = (0..6).map(f64::from).collect();
        let m: DoubleMatrix = Matrix::new(2, 3, &data).unwrap();
        assert_eq!(m.row(1), Some(&[3.0, 4.0, 5.0][..]));
        assert_eq!(m.row(2), None);
        assert_eq!(m.get(0, 2), Some(&2.0));
        let rows: Vec<_> = m.iter_rows().collect();
        assert_eq!(rows, vec![&[0.0, 1.0, 2.0][..], &[3.0, 4.0, 5.0][..]]);
        let t = Tensor::new(Shape::vector(6), &data[..]).unwrap();
        assert!(matches!(
            DoubleMatrix::try_from(t),
            Err(Error::RankMismatch {
                expected: 2,
                found: 1
            })
        ));
    }

    #[test]
    fn matrix_mut_rows_write_in_place() {
        let mut data = vec![0i32; 6];
        let mut m = MatrixMut::new(3, 2, &mut data).unwrap();
        m.row_mut(2).unwrap().copy_from_slice(&[7, 8]);
        assert!(m.row_mut(3).is_none());
        assert_eq!(m.as_matrix().row(2), Some(&[7, 8][..]));
        assert_eq!(data, [0, 0, 0, 0, 7, 8]);
    }

    #[test]
    fn from_bytes_checks_size_and_alignment() {
        let backing = [0u64; 4]; // 8-aligned storage
        let bytes: &[u8] = bytemuck::cast_slice(&backing);
        let t = Tensor::<f32>::from_bytes(Shape::vector(8), bytes).unwrap();
        assert_eq!(t.len(), 8);
        assert!(Tensor::<f32>::from_bytes(Shape::vector(7), bytes).is_err());
        // Misaligned by one byte: an error, not UB.
        assert!(Tensor::<f32>::from_bytes(Shape::vector(7), &bytes[1..29]).is_err());
    }

    #[test]
    fn vectors_and_matrix4() {
        let v: FloatVector = Vector::new(&[1.0, 2.0]);
        assert_eq!(v.iter().sum::<f32>(), 3.0);
        let bytes = [1u8, 2, 255];
        let u: UInt8Vector = Vector::new(&bytes);
        assert_eq!(u.as_tensor().dtype(), DType::U8);

        let mut m = [0.0f32; 16];
        for (i, x) in m.iter_mut().enumerate() {
            *x = i as f32;
        }
        let t = Tensor::new(Matrix4x4f::shape(), &m[..]).unwrap();
        let mat = Matrix4x4f::from_tensor(&t).unwrap();
        assert_eq!(mat.row(1), [4.0, 5.0, 6.0, 7.0]);
        assert_eq!(mat.mul(&Matrix4x4f::IDENTITY), *mat);
        let t2 = Tensor::new(Shape::matrix(2, 8).unwrap(), &m[..]).unwrap();
        assert!(Matrix4x4f::from_tensor(&t2).is_err());
    }
}
