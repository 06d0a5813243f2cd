"""The engine, read in this order: ``node`` (Function/ctx, grad mode, scopes), ``tensor``
(Tensor; ``apply_op`` and ``_record``, the one routine that makes a node), ``ops`` (the primitives),
``autograd`` (backward and grad), ``gradcheck`` (finite differences); ``factories`` makes
Tensors as torch's factory functions do. The public names are re-exported by
``tinygrad_bn`` itself."""
