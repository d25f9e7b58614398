"""Network pickles in stylegan2-ada-pytorch's layout (``dict(G, D, G_ema, augment_pipe,
training_set_kwargs)``): written so that the host's own tools load ours, read so that no code
from any pickle runs here.

Writing. Each network is stored as a recipe, not as an object graph: "call
``training.networks.Generator(**init_kwargs)`` (``functools.partial``), then
``torch.nn.Module.load_state_dict(net, state_dict)``, ``.eval()`` and ``.requires_grad_(False)``"
(the state the host's own snapshots hold their networks in). Those are public names in both checkouts:
in stylegan2-ada-pytorch's they build its own classes, in ours ours; the two take the same
constructor arguments and hold the same state-dict keys. No other module of ours is named, so
the pickle never collides with the host's ``training`` package.

Reading. A restricted unpickler: the globals a pickle names are looked up in a short table of
tensor/numpy rebuild functions; every other callable becomes an inert stand-in that records its
name and arguments. From the records we take each network's class name, constructor kwargs and
state dict, and rebuild it from our own classes. Three layouts are understood: ours (above),
ours before this format (plain object graphs of ``training.*`` classes), and
stylegan2-ada-pytorch's ``torch_utils.persistence`` pickles (source code plus state; the source
is never run: their ``Generator``/``Discriminator``/``AugmentPipe`` are rebuilt as ours).
"""

import collections
import functools
import inspect
import io
import pickle
import types

import numpy as np
import torch

from training.util import EasyDict

NETWORK_NAMES = ("G", "D", "G_ema", "augment_pipe")
# Our classes under the names stylegan2-ada-pytorch gives them (module, name): what a pickle
# written here refers to.
HOST_NAMES = {"Generator": ("training.networks", "Generator"),
              "Discriminator": ("training.networks", "Discriminator"),
              "AugmentPipe": ("training.augment", "AugmentPipe")}
# Constant filters the host's AugmentPipe keeps as saved buffers; ours computes them.
IGNORED_STATE = {"training.augment.AugmentPipe": ("Hz_geom", "Hz_fbank")}
_PROTOCOL = 4  # readable by Python >= 3.4, as the host's Python 3.7 environments need


class NotANetworkPickle(ValueError):
    """The bytes are not a pickle of networks we can rebuild; the message says why (one line)."""


# ---------------------------------------------------------------------------- writing
def _host_classes():
    from training.augment import AugmentPipe
    from training.networks import Discriminator, Generator

    return {Generator: HOST_NAMES["Generator"], Discriminator: HOST_NAMES["Discriminator"],
            AugmentPipe: HOST_NAMES["AugmentPipe"]}


def _host_kwargs(module):
    """The module's constructor kwargs in the host's signature. Our Discriminator also takes the
    minibatch-stddev settings at the top level; the host only inside ``epilogue_kwargs``."""
    kwargs = dict(module.init_kwargs)
    if type(module).__name__ == "Discriminator":
        epilogue = dict(kwargs.get("epilogue_kwargs") or {})
        for key in ("mbstd_group_size", "mbstd_num_channels"):
            value = kwargs.pop(key, None)
            if value is not None:
                epilogue.setdefault(key, value)
        kwargs["epilogue_kwargs"] = epilogue
    return kwargs


class _Recipe:
    """Pickles as "build the class from kwargs, then load this state dict"."""

    def __init__(self, module):
        self.module = module

    def __reduce__(self):
        m = self.module
        state = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
        # The host's AugmentPipe saves buffers ours does not have: load ours into it non-strictly.
        strict = type(m).__name__ != "AugmentPipe"
        setter = torch.nn.Module.load_state_dict if strict else functools.partial(torch.nn.Module.load_state_dict, strict=False)
        return functools.partial(type(m), **_host_kwargs(m)), (), state, None, None, setter


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _frozen_recipe(module):
    Module = torch.nn.Module
    return _Call(Module.requires_grad_, _Call(Module.eval, _Recipe(module)), False)


class _HostPickler(pickle._Pickler):  # the Python pickler: its save_global can be redirected
    """Writes our network classes under their host names (``training.networks.Generator``
    instead of ``training.networks_generator.Generator``)."""

    def __init__(self, file, names):
        super().__init__(file, protocol=_PROTOCOL)
        self._names = names

    def save_global(self, obj, name=None):
        public = self._names.get(obj) if isinstance(obj, type) else None
        if public is None:
            return super().save_global(obj, name)
        self.save(public[0])
        self.save(public[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def dumps_networks(networks, training_set_kwargs):
    """Pickle bytes of ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``; ``networks`` maps
    those names to modules (None allowed) of the classes in HOST_NAMES. ValueError otherwise."""
    names = _host_classes()
    data = {}
    for key in NETWORK_NAMES:
        module = networks.get(key)
        if module is not None and type(module) not in names:
            raise ValueError("cannot snapshot %s: it is a %s.%s, but a network pickle holds only %s"
                             % (key, type(module).__module__, type(module).__qualname__,
                                ", ".join("%s.%s" % v for v in names.values())))
        data[key] = None if module is None else _frozen_recipe(module)
    data["training_set_kwargs"] = dict(training_set_kwargs or {})
    buf = io.BytesIO()
    _HostPickler(buf, names).dump(data)
    return buf.getvalue()


# ---------------------------------------------------------------------------- reading
class _Inert:
    """Stands in for any class or function a pickle names that we do not run."""

    pickled_name = "?"
    args, kwargs, state = (), {}, None  # objects made by NEWOBJ skip __init__

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # a stand-in function called by the pickle
        return _Inert.named(self.pickled_name + "()")(*args, **kwargs)

    @staticmethod
    def named(name):
        return type("Inert", (_Inert,), {"pickled_name": name})


class _Partial:
    """``functools.partial`` replayed as data: calling it records a construction."""

    def __init__(self, func, *args, **kwargs):
        self.func, self.args, self.kwargs = func, args, kwargs

    def __setstate__(self, state):
        self.func, self.args, kwargs, _ = state
        self.kwargs = dict(kwargs or {})

    def __call__(self, *args, **kwargs):
        if self.func is _record_state:
            return _record_state(*(self.args + args), **dict(self.kwargs, **kwargs))
        if isinstance(self.func, type) and issubclass(self.func, _Inert):
            return _Built(self.func.pickled_name, dict(self.kwargs, **kwargs), positional=self.args + args)
        raise NotANetworkPickle("it calls %r in a way network pickles do not" % (self.func,))


class _Built:
    """A network as the pickle describes it: class name, constructor kwargs, tensors."""

    def __init__(self, class_name, init_kwargs, positional=(), state=None):
        self.class_name, self.init_kwargs, self.positional, self.state = class_name, init_kwargs, positional, state
        self.state_dict = None


def _record_state(built, state_dict, strict=True):
    if not isinstance(built, _Built):
        raise NotANetworkPickle("load_state_dict is applied to something other than a network")
    built.state_dict = dict(state_dict)


def _same_network(built, *args):
    # Module.eval / Module.requires_grad_ on a recipe: no effect on what we rebuild.
    if not isinstance(built, _Built):
        raise NotANetworkPickle("eval/requires_grad_ is applied to something other than a network")
    return built


def _persistent_object(meta):
    """stylegan2-ada-pytorch's ``_reconstruct_persistent_obj``: keep the class name and state,
    ignore the source code it would run."""
    meta = dict(meta)
    state = dict(meta.get("state") or {})
    return _Built(str(meta.get("class_name")), dict(state.get("_init_kwargs") or {}),
                  positional=tuple(state.get("_init_args") or ()), state=state)


def _inert_from_reconstructor(cls, base, state):
    # copyreg._reconstructor: how protocol 0/1 pickles rebuild plain objects.
    return cls() if isinstance(cls, type) and issubclass(cls, _Inert) else _Inert.named("copyreg._reconstructor")()


def _parameter_with_state(data, requires_grad, backward_hooks, state=None):
    return torch._utils._rebuild_parameter(data, requires_grad, backward_hooks)


class _StorageUnpickler(pickle.Unpickler):
    """For torch < 1.13 (no ``weights_only``): a storage's bytes may name storage types only."""

    def find_class(self, module, name):
        if module == "torch" and name.endswith("Storage") or (module, name) == ("collections", "OrderedDict"):
            return super().find_class(module, name)
        raise NotANetworkPickle("a tensor in it refers to %s.%s" % (module, name))


_STORAGE_PICKLE = types.SimpleNamespace(__name__="restricted_storage_pickle", Unpickler=_StorageUnpickler,
                                        load=lambda f, **kwargs: _StorageUnpickler(f, **kwargs).load())


def _weights_from_bytes(data):
    """``torch.storage._load_from_bytes`` without its full (code-running) torch.load."""
    if "weights_only" in inspect.signature(torch.load).parameters:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return torch.load(io.BytesIO(data), map_location="cpu", pickle_module=_STORAGE_PICKLE)


def _tensor_from_type(func, new_type, args, state):
    # torch's _rebuild_from_type_v2: rebuild with an allowed function, keep plain tensors only.
    if not callable(func) or isinstance(func, type) and issubclass(func, _Inert):
        raise NotANetworkPickle("a tensor in it is rebuilt by %r" % (func,))
    return func(*args)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter_with_state,
    ("copyreg", "_reconstructor"): _inert_from_reconstructor,
    ("torch._utils", "_rebuild_from_type_v2"): _tensor_from_type,
    ("torch.storage", "_load_from_bytes"): _weights_from_bytes,
    ("torch.nn.modules.module", "Module.load_state_dict"): _record_state,
    ("torch.nn.modules.module", "Module.eval"): _same_network,
    ("torch.nn.modules.module", "Module.requires_grad_"): _same_network,
    ("functools", "partial"): _Partial,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("training.util", "EasyDict"): EasyDict,
    ("numpy", "dtype"): np.dtype,
}
_NUMPY_SCALAR = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy moved it in 2.0


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _SAFE_GLOBALS.get((module, name))
        if found is not None:
            return found
        if module in _NUMPY_SCALAR and name == "scalar":
            return _numpy_scalar
        if module == "dnnlib.tflib.network":
            raise NotANetworkPickle("it holds TensorFlow networks; convert it with stylegan2-ada-pytorch's legacy.py first")
        return _Inert.named("%s.%s" % (module, name))

    def persistent_load(self, pid):
        raise NotANetworkPickle("it refers to external data (%r)" % (pid,))


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        return None
    return np.frombuffer(data, dtype=dtype)[0].item()


def _flatten_state(state, prefix, out):
    """Parameters and persistent buffers of a module's pickled ``__dict__``, by dotted key."""
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if value is not None and not (group == "_buffers" and key in skip):
                out[prefix + key] = value.detach() if isinstance(value, torch.Tensor) else value
    for key, child in (state.get("_modules") or {}).items():
        child_state = child.state if isinstance(child, (_Built, _Inert)) else None
        if isinstance(child_state, dict):
            _flatten_state(child_state, prefix + key + ".", out)
    return out


def _record_of(name, obj):
    """``dict(class_name, init_kwargs, state_dict)`` of one pickled network."""
    if isinstance(obj, _Built) and obj.state_dict is not None:  # our recipe
        class_name, init_kwargs, state_dict = obj.class_name, obj.init_kwargs, obj.state_dict
    elif isinstance(obj, _Built) and obj.state is not None:  # stylegan2-ada-pytorch's persistence
        short = obj.class_name
        if short not in HOST_NAMES:
            raise NotANetworkPickle("its %s is a %r, not one of stylegan2-ada-pytorch's %s (a StyleGAN3 or other "
                                    "fork's network?); load it with that fork's own tools"
                                    % (name, short, "/".join(HOST_NAMES)))
        if obj.positional:
            raise NotANetworkPickle("its %s was built with positional arguments, which cannot be rebuilt" % name)
        class_name, init_kwargs, state_dict = "%s.%s" % HOST_NAMES[short], obj.init_kwargs, _flatten_state(obj.state, "", {})
    elif isinstance(obj, _Inert) and isinstance(obj.state, dict) and isinstance(obj.state.get("init_kwargs"), dict):
        class_name = obj.pickled_name  # our snapshots before the recipe format: plain object graphs
        init_kwargs, state_dict = obj.state["init_kwargs"], _flatten_state(obj.state, "", {})
    else:
        what = getattr(obj, "pickled_name", type(obj).__name__)
        raise NotANetworkPickle("its %s is a %s, not a network this trainer can rebuild" % (name, what))
    ignored = IGNORED_STATE.get(class_name, ())
    state_dict = {k: v for k, v in state_dict.items() if k not in ignored}
    return dict(class_name=class_name, init_kwargs=_plain(init_kwargs), state_dict=state_dict)


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (_Inert, _Built, _Partial)):
        raise NotANetworkPickle("a constructor argument is a %s object" % getattr(obj, "pickled_name", "code"))
    return obj


def read_network_pickle(file):
    """Read a network pickle from an open binary file without running code from it.

    Returns ``dict(networks={name: record or None}, training_set_kwargs=dict, extra={...})`` where
    a record is ``dict(class_name, init_kwargs, state_dict)``. NotANetworkPickle when the file is
    not a pickle of networks we can rebuild."""
    try:
        data = _RestrictedUnpickler(file).load()
    except NotANetworkPickle:
        raise
    except Exception as exc:  # truncated / not a pickle / a rebuild function refused its arguments
        raise NotANetworkPickle("%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "unreadable"))
    if not isinstance(data, dict) or not any(data.get(k) is not None for k in ("G", "G_ema")):
        raise NotANetworkPickle("no G or G_ema network in it")
    networks = {name: None if data.get(name) is None else _record_of(name, data[name]) for name in NETWORK_NAMES}
    ts_kwargs = data.get("training_set_kwargs")
    extra = {}
    for key, value in data.items():  # other plain entries (a fork may store its options)
        if key not in NETWORK_NAMES and key != "training_set_kwargs":
            try:
                extra[str(key)] = _plain(value)
            except NotANetworkPickle:
                pass
    return dict(networks=networks, training_set_kwargs=_plain(dict(ts_kwargs)) if isinstance(ts_kwargs, dict) else {},
                extra=extra)
