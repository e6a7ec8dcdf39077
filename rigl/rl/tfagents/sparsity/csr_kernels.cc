// CPU kernels for sparse layers that hold only their active weights.
//
// A layer's weight matrix W [n_in, n_out] is `values` [nnz] at positions
// given in compressed rows or columns. Two ops cover forward and backward:
//
//   SparserlMatMul(x [B, n_src], ptr [n_dst + 1], src [nnz], which [nnz or 0],
//                  values [nnz], bias [n_dst or 0]; relu) -> y [B, n_dst]
//     y[b, d] = sum over k in ptr[d]..ptr[d+1] of values[which[k]] * x[b, src[k]]
//     (an empty `which` stands for 0, 1, ..., nnz - 1), plus bias[d] if
//     given, then max(y, 0) if `relu`: a Dense layer's whole forward pass.
//     W by column (d = output unit) gives the forward x @ W; W by row
//     (d = input unit) gives the input gradient dy @ W^T.
//
//   SparserlSampledDot(x [B, n_in], g [B, n_out], ptr [n_in + 1], col [nnz])
//       -> dvalues [nnz]
//     dvalues[k] = sum over b of x[b, row(k)] * g[b, col[k]], positions by
//     row: the gradient with respect to each active weight, and no other.
//
// Activations arrive batch-major (Keras' layout). The kernels copy blocks
// of the batch into feature-major tiles (8x8 register transposes), so the
// inner loops run over contiguous batch columns and vectorise; results go
// back batch-major the same way. Large products are split over TensorFlow's
// CPU threads by batch tile (SparseMatMul) or by weight row
// (SparseSampledDot); no sum crosses threads, so results do not depend on
// the thread count.

#include <algorithm>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace sparserl {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
namespace shape_inference = tensorflow::shape_inference;

// Vector types (GCC/Clang extensions) that map to the machine's SIMD
// registers: 16 floats for arithmetic, 8 for transposes.
typedef float Vec __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef int Mask8 __attribute__((vector_size(32)));
constexpr int kLanes = 16;
// Products smaller than this many multiply-adds run on the calling thread:
// handing work to the pool costs more than it saves.
constexpr int64_t kParallelWork = int64_t{1} << 23;

// A per-thread scratch buffer of at least `size` floats, reused across
// calls: fresh large allocations cost page faults on every call.
inline float* Scratch(int slot, int64_t size) {
  thread_local std::vector<float> buffers[3];
  std::vector<float>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

template <typename V>
inline V Load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename V>
inline void Store(float* p, const V& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Transposes an 8x8 block: rows in[r * in_stride + c] to out[c * out_stride + r].
inline void Transpose8(const float* in, int64_t in_stride, float* out,
                       int64_t out_stride) {
  Vec8 r[8];
  for (int i = 0; i < 8; ++i) r[i] = Load<Vec8>(in + i * in_stride);
  const Mask8 lo = {0, 8, 1, 9, 4, 12, 5, 13};
  const Mask8 hi = {2, 10, 3, 11, 6, 14, 7, 15};
  const Mask8 pairs_lo = {0, 1, 8, 9, 4, 5, 12, 13};
  const Mask8 pairs_hi = {2, 3, 10, 11, 6, 7, 14, 15};
  const Mask8 halves_lo = {0, 1, 2, 3, 8, 9, 10, 11};
  const Mask8 halves_hi = {4, 5, 6, 7, 12, 13, 14, 15};
  Vec8 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], lo);
    t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], hi);
  }
  for (int half = 0; half < 2; ++half) {
    const int o = 4 * half;
    u[o] = __builtin_shuffle(t[o], t[o + 2], pairs_lo);
    u[o + 1] = __builtin_shuffle(t[o], t[o + 2], pairs_hi);
    u[o + 2] = __builtin_shuffle(t[o + 1], t[o + 3], pairs_lo);
    u[o + 3] = __builtin_shuffle(t[o + 1], t[o + 3], pairs_hi);
  }
  for (int c = 0; c < 4; ++c) {
    Store(out + c * out_stride, __builtin_shuffle(u[c], u[c + 4], halves_lo));
    Store(out + (c + 4) * out_stride,
          __builtin_shuffle(u[c], u[c + 4], halves_hi));
  }
}

// Rows [b0, b0 + rows) of x [*, n] into tile [n][width], zero beyond `rows`.
void ToTile(const float* x, int64_t n, int64_t b0, int64_t rows,
            int64_t width, float* tile) {
  const int64_t full_cols = n / 8 * 8;
  if (rows == width && width % 8 == 0) {
    for (int64_t t = 0; t < width; t += 8)
      for (int64_t i = 0; i < full_cols; i += 8)
        Transpose8(x + (b0 + t) * n + i, n, tile + i * width + t, width);
  } else {
    std::memset(tile, 0, sizeof(float) * n * width);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t i = 0; i < full_cols; ++i)
        tile[i * width + t] = x[(b0 + t) * n + i];
  }
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t i = full_cols; i < n; ++i)
      tile[i * width + t] = x[(b0 + t) * n + i];
}

// The inverse of ToTile: tile [n][width] into rows [b0, b0 + rows) of y.
void FromTile(const float* tile, int64_t n, int64_t b0, int64_t rows,
              int64_t width, float* y) {
  const int64_t full_cols = n / 8 * 8;
  if (rows == width && width % 8 == 0) {
    for (int64_t t = 0; t < width; t += 8)
      for (int64_t i = 0; i < full_cols; i += 8)
        Transpose8(tile + i * width + t, width, y + (b0 + t) * n + i, n);
  } else {
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t i = 0; i < full_cols; ++i)
        y[(b0 + t) * n + i] = tile[i * width + t];
  }
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t i = full_cols; i < n; ++i)
      y[(b0 + t) * n + i] = tile[i * width + t];
}

// out[d][:] = sum_k values[k] * in[src[k]][:] on one tile of W lanes.
template <int W>
void TileProduct(const float* in, int64_t n_dst, const int* ptr,
                 const int* src, const int* which, const float* values,
                 const float* bias, bool relu, float* out) {
  constexpr int kVectors = W / kLanes;
  for (int64_t d = 0; d < n_dst; ++d) {
    Vec acc[kVectors];
    for (int j = 0; j < kVectors; ++j) acc[j] = Vec{0};
    for (int k = ptr[d]; k < ptr[d + 1]; ++k) {
      const float v = values[which ? which[k] : k];
      const float* row = in + static_cast<int64_t>(src[k]) * W;
      for (int j = 0; j < kVectors; ++j)
        acc[j] += v * Load<Vec>(row + j * kLanes);
    }
    if (bias != nullptr)
      for (int j = 0; j < kVectors; ++j) acc[j] += bias[d];
    if (relu) {
      const Vec zero = {0};
      for (int j = 0; j < kVectors; ++j)
        acc[j] = acc[j] > zero ? acc[j] : zero;
    }
    for (int j = 0; j < kVectors; ++j) Store(out + d * W + j * kLanes, acc[j]);
  }
}

template <int W>
void TiledMatMul(const float* x, int64_t batch, int64_t n_src, int64_t n_dst,
                 const int* ptr, const int* src, const int* which,
                 const float* values, const float* bias, bool relu, float* y,
                 int64_t first_tile, int64_t last_tile) {
  float* in = Scratch(0, n_src * W);
  float* out = Scratch(1, n_dst * W);
  for (int64_t tile = first_tile; tile < last_tile; ++tile) {
    const int64_t b0 = tile * W;
    const int64_t rows = std::min<int64_t>(W, batch - b0);
    ToTile(x, n_src, b0, rows, W, in);
    TileProduct<W>(in, n_dst, ptr, src, which, values, bias, relu, out);
    FromTile(out, n_dst, b0, rows, W, y);
  }
}

Status CheckStructure(const Tensor& ptr, const Tensor& index, int64_t rows,
                      int64_t bound, const char* op) {
  const int64_t nnz = index.NumElements();
  if (ptr.NumElements() != rows + 1)
    return InvalidArgument(op, ": ptr has ", ptr.NumElements(),
                           " entries, expected ", rows + 1, ".");
  const int* p = ptr.flat<int>().data();
  if (p[0] != 0 || p[rows] != nnz)
    return InvalidArgument(op, ": ptr must run from 0 to nnz = ", nnz, ".");
  for (int64_t r = 0; r < rows; ++r)
    if (p[r + 1] < p[r]) return InvalidArgument(op, ": ptr must not decrease.");
  const int* i = index.flat<int>().data();
  for (int64_t k = 0; k < nnz; ++k)
    if (i[k] < 0 || i[k] >= bound)
      return InvalidArgument(op, ": index ", i[k], " outside [0, ", bound,
                             ").");
  return Status();
}

REGISTER_OP("SparserlMatMul")
    .Input("x: float")
    .Input("ptr: int32")
    .Input("src: int32")
    .Input("which: int32")
    .Input("values: float")
    .Input("bias: float")
    .Attr("relu: bool = false")
    .Output("y: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::DimensionHandle n_dst;
      TF_RETURN_IF_ERROR(c->Subtract(c->Dim(c->input(1), 0), 1, &n_dst));
      c->set_output(0, c->Matrix(c->Dim(c->input(0), 0), n_dst));
      return Status();
    });

class SparseMatMulOp : public OpKernel {
 public:
  explicit SparseMatMulOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("relu", &relu_));
  }
  // Run on the scheduling thread: a hand-off to the pool costs more than
  // most of these products.
  bool IsExpensive() override { return false; }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& ptr = context->input(1);
    const Tensor& src = context->input(2);
    const Tensor& which = context->input(3);
    const Tensor& values = context->input(4);
    const Tensor& bias_tensor = context->input(5);
    OP_REQUIRES(context, x.dims() == 2,
                InvalidArgument("SparserlMatMul: x must be a matrix."));
    OP_REQUIRES(context, src.NumElements() == values.NumElements(),
                InvalidArgument("SparserlMatMul: src and values differ in size."));
    const int64_t batch = x.dim_size(0);
    const int64_t n_src = x.dim_size(1);
    const int64_t n_dst = ptr.NumElements() - 1;
    OP_REQUIRES_OK(context,
                   CheckStructure(ptr, src, n_dst, n_src, "SparserlMatMul"));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({batch, n_dst}), &y));
    const float* x_data = x.flat<float>().data();
    const int* p = ptr.flat<int>().data();
    const int* s = src.flat<int>().data();
    const int64_t nnz = values.NumElements();
    OP_REQUIRES(context, which.NumElements() == 0 || which.NumElements() == nnz,
                InvalidArgument("SparserlMatMul: which must be empty or have "
                                "one entry per value."));
    const int* w = nullptr;
    if (which.NumElements() > 0) {
      w = which.flat<int>().data();
      for (int64_t k = 0; k < nnz; ++k)
        OP_REQUIRES(context, w[k] >= 0 && w[k] < nnz,
                    InvalidArgument("SparserlMatMul: which[", k, "] = ", w[k],
                                    " outside [0, ", nnz, ")."));
    }
    OP_REQUIRES(context, bias_tensor.NumElements() == 0 ||
                             bias_tensor.NumElements() == n_dst,
                InvalidArgument("SparserlMatMul: bias must be empty or have "
                                "one entry per output."));
    const float* bias = bias_tensor.NumElements()
                            ? bias_tensor.flat<float>().data() : nullptr;
    const bool relu = relu_;
    const float* v = values.flat<float>().data();
    float* y_data = y->flat<float>().data();
    if (batch < 4) {  // acting: one dot per output, no tiles
      for (int64_t b = 0; b < batch; ++b) {
        const float* row = x_data + b * n_src;
        for (int64_t d = 0; d < n_dst; ++d) {
          float sum = 0.0f;
          for (int k = p[d]; k < p[d + 1]; ++k)
            sum += v[w ? w[k] : k] * row[s[k]];
          if (bias != nullptr) sum += bias[d];
          y_data[b * n_dst + d] = relu && sum < 0.0f ? 0.0f : sum;
        }
      }
      return;
    }
    const int width = batch >= 64 ? 64 : 16;
    const int64_t tiles = (batch + width - 1) / width;
    auto work = [&](int64_t first, int64_t last) {
      if (width == 64)
        TiledMatMul<64>(x_data, batch, n_src, n_dst, p, s, w, v, bias, relu,
                        y_data, first, last);
      else
        TiledMatMul<16>(x_data, batch, n_src, n_dst, p, s, w, v, bias, relu,
                        y_data, first, last);
    };
    const int64_t per_tile = (nnz + n_src + n_dst) * width;
    if (per_tile * tiles < kParallelWork || tiles == 1) {
      work(0, tiles);
    } else {
      auto* threads = context->device()->tensorflow_cpu_worker_threads();
      tensorflow::Shard(threads->num_threads, threads->workers, tiles,
                        per_tile, work);
    }
  }

 private:
  bool relu_;
};

REGISTER_KERNEL_BUILDER(Name("SparserlMatMul").Device(DEVICE_CPU),
                        SparseMatMulOp);

REGISTER_OP("SparserlSampledDot")
    .Input("x: float")
    .Input("g: float")
    .Input("ptr: int32")
    .Input("col: int32")
    .Output("dvalues: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(c->Dim(c->input(3), 0)));
      return Status();
    });

// The sum of a vector's lanes, by halving (log2 steps rather than a chain).
inline float Sum(Vec v) {
  typedef int Index __attribute__((vector_size(64)));
  v += __builtin_shuffle(v, Index{8, 9, 10, 11, 12, 13, 14, 15,
                                  0, 1, 2, 3, 4, 5, 6, 7});
  v += __builtin_shuffle(v, Index{4, 5, 6, 7, 0, 1, 2, 3,
                                  12, 13, 14, 15, 8, 9, 10, 11});
  v += __builtin_shuffle(v, Index{2, 3, 0, 1, 6, 7, 4, 5,
                                  10, 11, 8, 9, 14, 15, 12, 13});
  return v[0] + v[1];
}

// out[j] = a . b[j] for `count` (<= 4) weights of one row of W, over a
// batch split into `tiles` feature-major slabs of `width` (a multiple of
// kLanes) columns: a and b[j] are offsets into each slab, `a_slab` and
// `b_slab` the slabs' sizes. One horizontal sum per weight.
inline void Dots(const float* a, int64_t a_slab, const float* const* b,
                 int64_t b_slab, int count, int64_t tiles, int64_t width,
                 float* out) {
  Vec acc[4] = {Vec{0}, Vec{0}, Vec{0}, Vec{0}};
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const float* at = a + tile * a_slab;
    for (int64_t t = 0; t < width; t += kLanes) {
      const Vec x = Load<Vec>(at + t);
      for (int j = 0; j < count; ++j)
        acc[j] += x * Load<Vec>(b[j] + tile * b_slab + t);
    }
  }
  for (int j = 0; j < count; ++j) out[j] = Sum(acc[j]);
}

class SparseSampledDotOp : public OpKernel {
 public:
  explicit SparseSampledDotOp(OpKernelConstruction* context)
      : OpKernel(context) {}
  bool IsExpensive() override { return false; }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& g = context->input(1);
    const Tensor& ptr = context->input(2);
    const Tensor& col = context->input(3);
    OP_REQUIRES(context, x.dims() == 2 && g.dims() == 2 &&
                             x.dim_size(0) == g.dim_size(0),
                InvalidArgument("SparserlSampledDot: x and g must be matrices "
                                "with the same batch size."));
    const int64_t batch = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = g.dim_size(1);
    const int64_t nnz = col.NumElements();
    OP_REQUIRES_OK(context, CheckStructure(ptr, col, n_in, n_out,
                                           "SparserlSampledDot"));
    Tensor* dvalues = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({nnz}),
                                                     &dvalues));
    const float* x_data = x.flat<float>().data();
    const float* g_data = g.flat<float>().data();
    const int* p = ptr.flat<int>().data();
    const int* c = col.flat<int>().data();
    float* out = dvalues->flat<float>().data();
    // The batch in feature-major slabs of `width` columns (copying it
    // whole into one [features, batch] matrix is several times slower).
    const int64_t width = batch >= 64 ? 64 : kLanes;
    const int64_t tiles = (batch + width - 1) / width;
    const int64_t x_slab = n_in * width, g_slab = n_out * width;
    float* xt = Scratch(0, tiles * x_slab);
    float* gt = Scratch(1, tiles * g_slab);
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t b0 = tile * width;
      const int64_t rows = std::min<int64_t>(width, batch - b0);
      ToTile(x_data, n_in, b0, rows, width, xt + tile * x_slab);
      ToTile(g_data, n_out, b0, rows, width, gt + tile * g_slab);
    }
    auto work = [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) {
        for (int k = p[i]; k < p[i + 1]; k += 4) {
          const int count = std::min(4, p[i + 1] - k);
          const float* rows_of_g[4];
          for (int j = 0; j < count; ++j)
            rows_of_g[j] = gt + static_cast<int64_t>(c[k + j]) * width;
          Dots(xt + i * width, x_slab, rows_of_g, g_slab, count, tiles,
               width, out + k);
        }
      }
    };
    if (nnz * batch < kParallelWork) {
      work(0, n_in);
    } else {
      auto* threads = context->device()->tensorflow_cpu_worker_threads();
      tensorflow::Shard(threads->num_threads, threads->workers, n_in,
                        (nnz / std::max<int64_t>(n_in, 1) + 1) * batch, work);
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("SparserlSampledDot").Device(DEVICE_CPU),
                        SparseSampledDotOp);

}  // namespace sparserl
