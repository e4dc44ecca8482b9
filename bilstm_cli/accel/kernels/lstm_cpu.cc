// A fused LSTM loop for the CPU: the forward and the backward pass of one LSTM direction over a
// right-padded batch, as two TensorFlow ops. bilstm_cli/fused_lstm.py compiles this file once
// per machine and registers the gradient.
//
// Why: Keras runs an LSTM on a CPU as a graph loop of about 15 small ops a step forward and 30
// backward, and on this tool's model (64 units, batches of 128) the per-op overhead and the
// passes over memory between ops cost as much as the arithmetic. Here each time step is one
// small matrix product (Eigen) plus the gate arithmetic done in place, row by row.
//
// Layout, as Keras' LSTM with a right-padding mask sees it:
//   x_proj   [B, T, 4U]  the inputs times the input kernel (no bias), gates in Keras' order
//                        i, f, c, o
//            or, with lookup, [V, 4U]: the embedding table times the input kernel, and
//   ids      [B, T]      which of its rows each step reads (lookup only; else empty)
//   lengths  [B]         each text's number of real steps (1..T); later steps are padding
//   reverse              false: read each text forward; true: read it from its last real step
//                        back to its first (Keras' go_backwards with a mask)
// outputs    [B, T, U]   as Keras orders them: step t forward; for reverse, the output after
//                        reading original step T-1-j sits at j (padding first, as zeros)
// last       [B, U]      the output after each text's last step read
//
// Rows are processed longest first, so at each step the matrix product covers only the texts
// still running, and the batch is split between the op's threads (rows are independent, so
// each thread runs its own time loop without synchronising).

#include <algorithm>
#include <numeric>
#include <vector>

#include <Eigen/Dense>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace bilstm {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using Vector = Eigen::Array<float, Eigen::Dynamic, 1>;
using VectorMap = Eigen::Map<Vector>;
using ConstVectorMap = Eigen::Map<const Vector>;

REGISTER_OP("BilstmLstm")
    .Input("x_proj: float")
    .Input("bias: float")
    .Input("recurrent_kernel: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("lengths: int32")
    .Input("ids: int32")
    .Attr("reverse: bool")
    .Attr("save_state: bool = true")
    .Attr("lookup: bool = false")
    .Output("outputs: float")
    .Output("last: float")
    .Output("h_prev: float")
    .Output("cells: float")
    .Output("gates: float")
    .SetShapeFn([](InferenceContext* ctx) {
      bool lookup;
      TF_RETURN_IF_ERROR(ctx->GetAttr("lookup", &lookup));
      ShapeHandle per_step;
      if (lookup) {
        TF_RETURN_IF_ERROR(ctx->Concatenate(ctx->input(6), ctx->Vector(ctx->Dim(ctx->input(2), 0)),
                                            &per_step));
      } else {
        TF_RETURN_IF_ERROR(
            ctx->ReplaceDim(ctx->input(0), 2, ctx->Dim(ctx->input(2), 0), &per_step));
      }
      ctx->set_output(0, per_step);
      ctx->set_output(1, ctx->input(3));
      // The saved state for the backward op: time-major, rows longest first (empty when
      // save_state is false: inference keeps no state).
      ctx->set_output(2, ctx->UnknownShapeOfRank(3));
      ctx->set_output(3, ctx->UnknownShapeOfRank(3));
      ctx->set_output(4, ctx->UnknownShapeOfRank(3));
      return absl::OkStatus();
    });

REGISTER_OP("BilstmLstmGrad")
    .Input("recurrent_kernel: float")
    .Input("c0: float")
    .Input("lengths: int32")
    .Input("h_prev: float")
    .Input("cells: float")
    .Input("gates: float")
    .Input("d_outputs: float")
    .Input("d_last: float")
    .Attr("reverse: bool")
    .Output("d_x_proj: float")
    .Output("d_bias: float")
    .Output("d_recurrent_kernel: float")
    .Output("d_h0: float")
    .Output("d_c0: float")
    .SetShapeFn([](InferenceContext* ctx) {
      ShapeHandle d_x;
      TF_RETURN_IF_ERROR(
          ctx->ReplaceDim(ctx->input(6), 2, ctx->Dim(ctx->input(0), 1), &d_x));
      ctx->set_output(0, d_x);
      ctx->set_output(1, ctx->Vector(ctx->Dim(ctx->input(0), 1)));
      ctx->set_output(2, ctx->input(0));
      ctx->set_output(3, ctx->input(1));
      ctx->set_output(4, ctx->input(1));
      return absl::OkStatus();
    });

REGISTER_OP("BilstmScatterAddRows")
    .Input("values: float")
    .Input("indices: int32")
    .Input("num_rows: int32")
    .Attr("squares: bool = false")
    .Output("sums: float")
    .Output("square_sums: float")
    .SetShapeFn([](InferenceContext* ctx) {
      // values [..., C], indices [...]: sums [num_rows, C], row r the sum of the values whose
      // index is r; with squares, square_sums likewise sums their squares (else [0, C]).
      tensorflow::shape_inference::DimensionHandle rows;
      TF_RETURN_IF_ERROR(ctx->MakeDimForScalarInput(2, &rows));
      bool squares;
      TF_RETURN_IF_ERROR(ctx->GetAttr("squares", &squares));
      const auto columns = ctx->Dim(ctx->input(0), -1);
      ctx->set_output(0, ctx->Matrix(rows, columns));
      ctx->set_output(1, ctx->Matrix(squares ? rows : ctx->MakeDim(0), columns));
      return absl::OkStatus();
    });

namespace {

// The shapes and the row order shared by both ops.
struct Batch {
  int64_t batch, steps, units;
  std::vector<int64_t> order;  // rows by length, longest first
  std::vector<int64_t> length;

  // Position in [B, T, .] of the step read at iteration t of a text of length n.
  int64_t Position(bool reverse, int64_t n, int64_t t) const { return reverse ? n - 1 - t : t; }
  // Where Keras puts that step's output.
  int64_t OutputPosition(bool reverse, int64_t n, int64_t t) const {
    return reverse ? steps - n + t : t;
  }
};

tensorflow::Status ReadBatch(const Tensor& lengths, int64_t batch, int64_t steps, int64_t units,
                             Batch* out) {
  if (lengths.dims() != 1 || lengths.dim_size(0) != batch) {
    return tensorflow::errors::InvalidArgument("lengths must have shape [batch]");
  }
  out->batch = batch;
  out->steps = steps;
  out->units = units;
  auto values = lengths.flat<int32_t>();
  out->length.resize(batch);
  for (int64_t b = 0; b < batch; ++b) {
    if (values(b) < 1 || values(b) > steps) {
      return tensorflow::errors::InvalidArgument("every length must be in 1..steps");
    }
    out->length[b] = values(b);
  }
  out->order.resize(batch);
  std::iota(out->order.begin(), out->order.end(), 0);
  std::stable_sort(out->order.begin(), out->order.end(),
                   [&](int64_t a, int64_t b) { return out->length[a] > out->length[b]; });
  return absl::OkStatus();
}

// One chunk of rows per thread of the op's pool, at most one per row.
int64_t MaxChunks(OpKernelContext* ctx, const Batch& batch) {
  const int num_threads = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
  return std::min<int64_t>(std::max(1, num_threads), batch.batch);
}

// Runs work(chunk, first, last) over [0, batch) split into MaxChunks chunks, balanced by the
// number of steps (rows are sorted, so chunks are contiguous in `order`). Returns the number of
// chunks used.
template <typename Work>
int64_t ForEachChunk(OpKernelContext* ctx, const Batch& batch, Work work) {
  const auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t chunks = MaxChunks(ctx, batch);
  int64_t total = 0;
  for (int64_t n : batch.length) total += n;
  std::vector<int64_t> bounds = {0};
  int64_t seen = 0;
  for (int64_t r = 0; r + 1 < batch.batch && static_cast<int64_t>(bounds.size()) < chunks; ++r) {
    seen += batch.length[batch.order[r]];
    if (seen * chunks >= total * static_cast<int64_t>(bounds.size())) bounds.push_back(r + 1);
  }
  bounds.push_back(batch.batch);
  const int64_t used = static_cast<int64_t>(bounds.size()) - 1;
  if (used == 1) {
    work(0, bounds[0], bounds[1]);
  } else {
    // A cost far above any split threshold: one chunk per shard.
    pool->workers->ParallelFor(used, 1'000'000'000, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) work(k, bounds[k], bounds[k + 1]);
    });
  }
  return used;
}

// Rows first..last-1 of `order` that are still running at iteration t: a prefix, since rows
// are sorted longest first.
int64_t Running(const Batch& batch, int64_t first, int64_t last, int64_t t) {
  int64_t r = first;
  while (r < last && batch.length[batch.order[r]] > t) ++r;
  return r - first;
}

// Every index in [0, rows): a lookup or a scatter reads or writes row index[k].
tensorflow::Status IndicesInRange(const int32_t* index, int64_t count, int64_t rows) {
  for (int64_t k = 0; k < count; ++k) {
    if (index[k] < 0 || index[k] >= rows) {
      return tensorflow::errors::InvalidArgument("index ", index[k], " is not in [0, ", rows,
                                                 ")");
    }
  }
  return absl::OkStatus();
}

class LstmOp : public OpKernel {
 public:
  explicit LstmOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reverse", &reverse_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("save_state", &save_state_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("lookup", &lookup_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x_proj = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    const Tensor& recurrent = ctx->input(2);
    const Tensor& h0 = ctx->input(3);
    const Tensor& c0 = ctx->input(4);
    const Tensor& ids = ctx->input(6);
    const bool lookup = lookup_;
    OP_REQUIRES(ctx, recurrent.dims() == 2 && (lookup ? x_proj.dims() == 2 && ids.dims() == 2
                                                      : x_proj.dims() == 3),
                tensorflow::errors::InvalidArgument(
                    "x_proj must be [B, T, 4U] (or [V, 4U] with ids [B, T]), kernel [U, 4U]"));
    const int64_t units = recurrent.dim_size(0);
    OP_REQUIRES(ctx, recurrent.dim_size(1) == 4 * units &&
                         x_proj.dim_size(x_proj.dims() - 1) == 4 * units &&
                         bias.NumElements() == 4 * units,
                tensorflow::errors::InvalidArgument("gate sizes must be 4 * units"));
    const Tensor& shape = lookup ? ids : x_proj;
    Batch batch;
    OP_REQUIRES_OK(ctx, ReadBatch(ctx->input(5), shape.dim_size(0), shape.dim_size(1), units,
                                  &batch));
    const int32_t* id = ids.flat<int32_t>().data();
    if (lookup) OP_REQUIRES_OK(ctx, IndicesInRange(id, ids.NumElements(), x_proj.dim_size(0)));
    const int64_t B = batch.batch, T = batch.steps, U = units, G = 4 * units;
    Tensor *outputs, *last, *h_prev, *cells, *gates;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, U}), &outputs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, U}), &last));
    const int64_t kept = save_state_ ? T : 0;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({kept, B, U}), &h_prev));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({kept, B, U}), &cells));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({kept, B, G}), &gates));
    if (B == 0 || T == 0) return;

    const float* x = x_proj.flat<float>().data();
    const ConstVectorMap b_vec(bias.flat<float>().data(), G);
    const ConstMatrixMap kernel(recurrent.flat<float>().data(), U, G);
    float* out = outputs->flat<float>().data();
    float* last_out = last->flat<float>().data();
    float* h_prev_out = h_prev->flat<float>().data();
    float* c_out = cells->flat<float>().data();
    float* g_out = gates->flat<float>().data();
    const float* h0_data = h0.flat<float>().data();
    const float* c0_data = c0.flat<float>().data();
    const bool reverse = reverse_, save = save_state_;

    ForEachChunk(ctx, batch, [&](int64_t, int64_t first, int64_t end) {
      const int64_t rows = end - first;
      Matrix h(rows, U), c(rows, U), z(rows, G);
      Matrix step_gates(save ? 0 : rows, G);  // the gates of one step, when none are kept
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = batch.order[first + r], n = batch.length[b];
        h.row(r) = ConstMatrixMap(h0_data + b * U, 1, U);
        c.row(r) = ConstMatrixMap(c0_data + b * U, 1, U);
        // Padding gets zero outputs, as Keras and cuDNN leave them.
        const int64_t pad_out = reverse ? 0 : n;
        std::fill(out + (b * T + pad_out) * U, out + (b * T + pad_out + T - n) * U, 0.0f);
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t running = Running(batch, first, end, t);
        if (running == 0) break;
        z.topRows(running).noalias() = h.topRows(running) * kernel;
        // The saved state of row r at step t: index t * B + first + r (time-major, sorted).
        const int64_t saved = t * B + first;
        if (save) MatrixMap(h_prev_out + saved * U, running, U) = h.topRows(running);
        for (int64_t r = 0; r < running; ++r) {
          const int64_t b = batch.order[first + r], n = batch.length[b];
          VectorMap zr(z.data() + r * G, G);
          const int64_t step = b * T + batch.Position(reverse, n, t);
          zr += ConstVectorMap(x + (lookup ? id[step] : step) * G, G) + b_vec;
          VectorMap g(save ? g_out + (saved + r) * G : step_gates.data() + r * G, G);
          g.head(2 * U) = zr.head(2 * U).logistic();
          g.segment(2 * U, U) = zr.segment(2 * U, U).tanh();
          g.tail(U) = zr.tail(U).logistic();
          VectorMap h_row(h.data() + r * U, U), c_row(c.data() + r * U, U);
          c_row = g.segment(U, U) * c_row + g.head(U) * g.segment(2 * U, U);
          if (save) VectorMap(c_out + (saved + r) * U, U) = c_row;
          h_row = g.tail(U) * c_row.tanh();
          VectorMap(out + (b * T + batch.OutputPosition(reverse, n, t)) * U, U) = h_row;
          if (t == n - 1) VectorMap(last_out + b * U, U) = h_row;
        }
      }
    });
  }

 private:
  bool reverse_, save_state_, lookup_;
};

class LstmGradOp : public OpKernel {
 public:
  explicit LstmGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reverse", &reverse_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& recurrent = ctx->input(0);
    const Tensor& c0 = ctx->input(1);
    const Tensor& h_prev = ctx->input(3);
    const Tensor& cells = ctx->input(4);
    const Tensor& gates = ctx->input(5);
    const Tensor& d_outputs = ctx->input(6);
    const Tensor& d_last = ctx->input(7);
    const int64_t units = recurrent.dim_size(0);
    Batch batch;
    OP_REQUIRES_OK(ctx, ReadBatch(ctx->input(2), d_outputs.dim_size(0), d_outputs.dim_size(1),
                                  units, &batch));
    const int64_t B = batch.batch, T = batch.steps, U = units, G = 4 * units;
    Tensor *d_x, *d_bias, *d_recurrent, *d_h0, *d_c0;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, G}), &d_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({G}), &d_bias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({U, G}), &d_recurrent));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({B, U}), &d_h0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({B, U}), &d_c0));
    VectorMap d_bias_vec(d_bias->flat<float>().data(), G);
    MatrixMap d_recurrent_mat(d_recurrent->flat<float>().data(), U, G);
    d_bias_vec.setZero();
    d_recurrent_mat.setZero();
    if (B == 0 || T == 0) return;

    const ConstMatrixMap kernel(recurrent.flat<float>().data(), U, G);
    const float* h_in = h_prev.flat<float>().data();
    const float* c_in = cells.flat<float>().data();
    const float* c0_data = c0.flat<float>().data();
    const float* g_in = gates.flat<float>().data();
    const float* d_out = d_outputs.flat<float>().data();
    const float* d_last_data = d_last.flat<float>().data();
    float* dx = d_x->flat<float>().data();
    float* d_h0_data = d_h0->flat<float>().data();
    float* d_c0_data = d_c0->flat<float>().data();
    const bool reverse = reverse_;
    // Each chunk sums its own part of the weight gradients; they are added up at the end.
    const int64_t max_chunks = MaxChunks(ctx, batch);
    std::vector<Vector> bias_parts(max_chunks, Vector::Zero(G));
    std::vector<Matrix> recurrent_parts(max_chunks, Matrix::Zero(U, G));

    const int64_t chunks = ForEachChunk(ctx, batch, [&](int64_t chunk, int64_t first,
                                                        int64_t end) {
      const int64_t rows = end - first;
      Matrix dh = Matrix::Zero(rows, U), dc = Matrix::Zero(rows, U), dz(rows, G);
      Vector& bias_sum = bias_parts[chunk];
      Matrix& recurrent_sum = recurrent_parts[chunk];
      Vector tanh_c(U), dc_t(U), dh_t(U);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = batch.order[first + r], n = batch.length[b];
        std::fill(dx + (b * T + n) * G, dx + (b * T + T) * G, 0.0f);
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t running = Running(batch, first, end, t);
        if (running == 0) continue;
        const int64_t saved = t * B + first;
        for (int64_t r = 0; r < running; ++r) {
          const int64_t b = batch.order[first + r], n = batch.length[b];
          ConstVectorMap g(g_in + (saved + r) * G, G);
          const auto i = g.head(U), f = g.segment(U, U), cc = g.segment(2 * U, U), o = g.tail(U);
          ConstVectorMap c_row(c_in + (saved + r) * U, U);
          ConstVectorMap c_prev(t == 0 ? c0_data + b * U : c_in + (saved - B + r) * U, U);
          VectorMap dh_row(dh.data() + r * U, U), dc_row(dc.data() + r * U, U);
          dh_t = dh_row +
                 ConstVectorMap(d_out + (b * T + batch.OutputPosition(reverse, n, t)) * U, U);
          if (t == n - 1) dh_t += ConstVectorMap(d_last_data + b * U, U);
          tanh_c = c_row.tanh();
          dc_t = dc_row + dh_t * o * (1.0f - tanh_c.square());
          VectorMap dzr(dz.data() + r * G, G);
          dzr.head(U) = dc_t * cc * i * (1.0f - i);
          dzr.segment(U, U) = dc_t * c_prev * f * (1.0f - f);
          dzr.segment(2 * U, U) = dc_t * i * (1.0f - cc.square());
          dzr.tail(U) = dh_t * tanh_c * o * (1.0f - o);
          dc_row = dc_t * f;
          bias_sum += dzr;
          VectorMap(dx + (b * T + batch.Position(reverse, n, t)) * G, G) = dzr;
        }
        recurrent_sum.noalias() +=
            ConstMatrixMap(h_in + saved * U, running, U).transpose() * dz.topRows(running);
        dh.topRows(running).noalias() = dz.topRows(running) * kernel.transpose();
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = batch.order[first + r];
        VectorMap(d_h0_data + b * U, U) = VectorMap(dh.data() + r * U, U);
        VectorMap(d_c0_data + b * U, U) = VectorMap(dc.data() + r * U, U);
      }
    });
    for (int64_t k = 0; k < chunks; ++k) {
      d_bias_vec += bias_parts[k];
      d_recurrent_mat += recurrent_parts[k];
    }
  }

 private:
  bool reverse_;
};

// Adds values[k] (and, for square_sums, values[k] squared) into row index[k], k in order, for
// the columns [first, last). The square is rounded before it is added (no fused multiply-add),
// so the sums are bit for bit what TensorFlow's Square then UnsortedSegmentSum give.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
void AddRows(const float* in, const int32_t* index, int64_t count, int64_t columns,
             int64_t first, int64_t last, float* sums, float* square_sums) {
  for (int64_t k = 0; k < count; ++k) {
    const float* source = in + k * columns;
    float* target = sums + index[k] * columns;
    for (int64_t c = first; c < last; ++c) target[c] += source[c];
    if (square_sums == nullptr) continue;
    float* square_target = square_sums + index[k] * columns;
    for (int64_t c = first; c < last; ++c) {
      const float square = source[c] * source[c];
      square_target[c] += square;
    }
  }
}
#pragma GCC pop_options

// Values summed into rows by index, the way TensorFlow's segment sum turns an IndexedSlices
// into a dense table: the lookup's d_x_proj into the rows of the projected table, and (with
// squares) an embedding's per-token gradient for Adam (optimizer.py). The segment sum runs
// single-threaded, 2.5x slower here (15 against 6 ms for 25,600 rows of 256); this splits the
// columns between the op's threads, so no two threads ever add into the same place.
class ScatterAddRowsOp : public OpKernel {
 public:
  explicit ScatterAddRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("squares", &squares_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& values = ctx->input(0);
    const Tensor& indices = ctx->input(1);
    OP_REQUIRES(ctx, values.dims() >= 1 && values.dims() == indices.dims() + 1,
                tensorflow::errors::InvalidArgument("values must be indices' shape plus one"));
    for (int d = 0; d < indices.dims(); ++d) {
      OP_REQUIRES(ctx, values.dim_size(d) == indices.dim_size(d),
                  tensorflow::errors::InvalidArgument("values must be indices' shape plus one"));
    }
    const int64_t rows = ctx->input(2).scalar<int32_t>()();
    const int64_t columns = values.dim_size(values.dims() - 1);
    const int64_t count = indices.NumElements();
    const int32_t* index = indices.flat<int32_t>().data();
    OP_REQUIRES_OK(ctx, IndicesInRange(index, count, rows));
    Tensor *sums, *square_sums;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({rows, columns}), &sums));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({squares_ ? rows : 0, columns}),
                                             &square_sums));
    float* out = sums->flat<float>().data();
    float* square_out = squares_ ? square_sums->flat<float>().data() : nullptr;
    const float* in = values.flat<float>().data();
    std::fill(out, out + rows * columns, 0.0f);
    if (squares_) std::fill(square_out, square_out + rows * columns, 0.0f);
    const auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    // Column blocks of at least 16 floats (one AVX-512 register), one per thread.
    const int64_t blocks = std::max<int64_t>(
        1, std::min<int64_t>(pool->num_threads, columns / 16));
    const auto add = [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        AddRows(in, index, count, columns, columns * block / blocks,
                columns * (block + 1) / blocks, out, square_out);
      }
    };
    if (blocks == 1) {
      add(0, 1);
    } else {
      pool->workers->ParallelFor(blocks, 1'000'000'000, add);
    }
  }

 private:
  bool squares_;
};

REGISTER_KERNEL_BUILDER(Name("BilstmLstm").Device(tensorflow::DEVICE_CPU), LstmOp);
REGISTER_KERNEL_BUILDER(Name("BilstmLstmGrad").Device(tensorflow::DEVICE_CPU), LstmGradOp);
REGISTER_KERNEL_BUILDER(Name("BilstmScatterAddRows").Device(tensorflow::DEVICE_CPU),
                        ScatterAddRowsOp);

}  // namespace
}  // namespace bilstm
