//! Element types: the [`DType`] codes stored in tensor headers, and the
//! [`Element`] trait that ties a Rust type to its code.

use std::fmt;

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

use crate::error::{Error, Result};

/// Number of values in one block of the block-quantized kinds
/// ([`DType::Q8Block`], [`DType::Q4Block`]).
pub const QUANT_BLOCK: usize = 32;

/// The element type of a tensor.
///
/// The `u8` code of each variant is part of the segment layout
/// (`docs/layout.md`) and never changes meaning.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// Untyped bytes (a slot that carries no tensor).
    Raw = 0,
    /// IEEE 754 binary32.
    F32 = 1,
    /// IEEE 754 binary64.
    F64 = 2,
    /// IEEE 754 binary16 ([`half::f16`]).
    F16 = 3,
    /// bfloat16 ([`half::bf16`]).
    BF16 = 4,
    /// Signed 8-bit integer.
    I8 = 5,
    /// Unsigned 8-bit integer.
    U8 = 6,
    /// Signed 16-bit integer.
    I16 = 7,
    /// Signed 32-bit integer.
    I32 = 8,
    /// Signed 64-bit integer.
    I64 = 9,
    /// Unsigned 32-bit integer.
    U32 = 10,
    /// Boolean stored as one byte, 0 or 1 ([`Bool`]).
    Bool = 11,
    /// Complex number of two f32 ([`Complex32`]).
    Complex32 = 12,
    /// Complex number of two f64 ([`Complex64`]).
    Complex64 = 13,
    /// Affine int8: `x = (q - zero_point) * scale`, with one scale and
    /// zero point for the tensor or one per channel along an axis.
    QInt8 = 32,
    /// Blocks of 32 int8 values sharing one f16 scale: `x = q * scale`.
    Q8Block = 33,
    /// Blocks of 32 4-bit values sharing one f16 scale: `x = (q - 8) * scale`.
    Q4Block = 34,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 17] = [
        DType::Raw,
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U32,
        DType::Bool,
        DType::Complex32,
        DType::Complex64,
        DType::QInt8,
        DType::Q8Block,
        DType::Q4Block,
    ];

    /// The code stored in tensor headers.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The dtype for a code read from a tensor header.
    ///
    /// # Errors
    /// [`Error::UnknownDType`] for a code no variant has.
    pub fn from_code(code: u8) -> Result<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.code() == code)
            .ok_or(Error::UnknownDType(code))
    }

    /// Size of one element in bytes, or `None` for the quantized kinds and
    /// `Raw`, whose storage is not one fixed size per element (see
    /// [`Shape::byte_size`](crate::tensor::Shape::byte_size)).
    pub const fn element_size(self) -> Option<usize> {
        Some(match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::Complex32 => 8,
            DType::Complex64 => 16,
            DType::Raw | DType::QInt8 | DType::Q8Block | DType::Q4Block => return None,
        })
    }

    /// Whether this is one of the quantized kinds.
    pub const fn is_quantized(self) -> bool {
        matches!(self, DType::QInt8 | DType::Q8Block | DType::Q4Block)
    }

    /// Lower-case name, as used in URIs, the CLI and `Display`.
    pub const fn name(self) -> &'static str {
        match self {
            DType::Raw => "raw",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U32 => "u32",
            DType::Bool => "bool",
            DType::Complex32 => "c32",
            DType::Complex64 => "c64",
            DType::QInt8 => "qint8",
            DType::Q8Block => "q8block",
            DType::Q4Block => "q4block",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A boolean stored as one byte. Any non-zero byte reads as `true`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
#[repr(transparent)]
pub struct Bool(pub u8);

impl Bool {
    /// The value as a `bool`.
    pub const fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for Bool {
    fn from(b: bool) -> Self {
        Bool(b as u8)
    }
}

impl From<Bool> for bool {
    fn from(b: Bool) -> Self {
        b.get()
    }
}

/// A complex number of two `f32`, real part first.
#[derive(Copy, Clone, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Complex32 {
    /// Real part.
    pub re: f32,
    /// Imaginary part.
    pub im: f32,
}

/// A complex number of two `f64`, real part first.
#[derive(Copy, Clone, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Complex64 {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

/// A plain element type with a [`DType`]: every bit pattern is a valid value,
/// so a tensor of it can be viewed in place in shared memory.
///
/// Implemented for `f32 f64 f16 bf16 i8 u8 i16 i32 i64 u32`, [`Bool`],
/// [`Complex32`] and [`Complex64`]. Quantized tensors are not `Element`
/// slices; see [`crate::tensor::quant`].
pub trait Element: Pod + Send + Sync + 'static {
    /// The dtype code of this type.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {
        $(impl Element for $t { const DTYPE: DType = DType::$d; })*
    };
}

element! {
    f32 => F32, f64 => F64, f16 => F16, bf16 => BF16,
    i8 => I8, u8 => U8, i16 => I16, i32 => I32, i64 => I64, u32 => U32,
    Bool => Bool, Complex32 => Complex32, Complex64 => Complex64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in DType::ALL {
            assert!(seen.insert(d.code()), "duplicate code {}", d.code());
            assert_eq!(DType::from_code(d.code()).unwrap(), d);
        }
        assert!(matches!(
            DType::from_code(200),
            Err(Error::UnknownDType(200))
        ));
    }

    #[test]
    fn element_sizes_match_rust_types() {
        fn check<T: Element>() {
            assert_eq!(T::DTYPE.element_size(), Some(std::mem::size_of::<T>()));
            assert!(!T::DTYPE.is_quantized());
        }
        check::<f32>();
        check::<f64>();
        check::<f16>();
        check::<bf16>();
        check::<i8>();
        check::<u8>();
        check::<i16>();
        check::<i32>();
        check::<i64>();
        check::<u32>();
        check::<Bool>();
        check::<Complex32>();
        check::<Complex64>();
        for q in [DType::QInt8, DType::Q8Block, DType::Q4Block] {
            assert!(q.is_quantized());
            assert_eq!(q.element_size(), None);
        }
    }

    #[test]
    fn bool_reads_any_nonzero_as_true() {
        assert!(Bool(7).get());
        assert!(!Bool(0).get());
        assert!(bool::from(Bool::from(true)));
    }
}
