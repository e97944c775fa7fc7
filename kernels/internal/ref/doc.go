// Package ref keeps the parameter searches of lsq and clip exactly as they
// were before their kernels were vectorised (the scalar groupfit Eval,
// EvalWeighted and Search, and both methods' fit functions with their
// settings), and dq's super-block fit as it was before its per-sub-block
// bookkeeping was vectorised. Only tests import it: the vectorised
// kernels must choose the same fp16 params, and so store the same codes,
// on every input.
package ref
