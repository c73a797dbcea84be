"""The properties, one module each, over Swin's 2x2 merge; 1, 3, 4, 5 and 8 over every window too:

1. ``test_forward_oracle``: the forward pass matches the float64 oracle;
2. ``test_impl_pairs``: every impl agrees with the reference one;
3. ``test_gradients``: gradients match the oracle's;
4. ``test_gradcheck``: ``gradcheck`` and ``gradgradcheck`` in float64;
5. ``test_output_meta``: output shape, dtype, device and layout, meta included;
6. ``test_state_dict_roundtrip``: state_dicts round-trip between parameterisations;
7. ``test_conv_channel_norm``: an impl registered as inexact is shown to differ;
8. ``test_finite_range``: finite in, finite out, up to the edge of each dtype's range;

and ``test_gather`` (the gather alone), ``test_conditioning`` (property 1 steered to
ill-conditioned windows). Every oracle comparison is a record for ``pm-core verify`` (see
``pm_core.testing``); the verification table is built from the modules here that make
them (``pm_core.lab.verify.ORACLE_MODULES``), which ``pm_core.lab.verify`` runs.
"""
