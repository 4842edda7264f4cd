//! Typed tensors: element types, shapes, views over bytes, and quantization.
//!
//! Nothing here knows about shared memory: a view is a shape and a dtype laid
//! over a byte slice, wherever that slice lives.

pub mod dtype;
pub mod quant;
pub mod shape;
pub mod view;

pub use dtype::{Bool, Complex32, Complex64, DType, Element, QUANT_BLOCK};
pub use quant::{QTensor, QuantKind, QuantParams, QuantizedTensor};
pub use shape::{Shape, MAX_RANK};
pub use view::{
    DoubleMatrix, FloatVector, Int8Vector, Matrix, Matrix4x4f, MatrixMut, Tensor, TensorMut,
    UInt8Vector, Vector, VectorMut,
};
