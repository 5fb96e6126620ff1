"""Producer / consumer indices and constant values of an ONNX graph, for the passes that walk it (the
quantization plan, the integer Detect head)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np


class OnnxGraph:
    """Indices over one ``onnx.ModelProto``'s graph (a snapshot: rebuild after editing the graph).

    Attributes:
        nodes: the nodes in graph order.
        initializers: names of constant tensors (initializers and ``Constant`` node outputs).
        inputs: graph inputs that are not initializers.
        outputs: graph output names.
        producer: tensor name -> the node that writes it.
        consumers: tensor name -> the nodes that read it.
    """

    def __init__(self, proto) -> None:
        graph = proto.graph
        self.nodes = list(graph.node)
        self._tensors = {init.name: init for init in graph.initializer}
        self.initializers = set(self._tensors)
        self.inputs = {i.name for i in graph.input} - self.initializers
        self.outputs = [o.name for o in graph.output]
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        # Constant nodes count as initializers (their outputs are not activations).
        self._constant_nodes = {n.output[0]: n for n in self.nodes if n.op_type == "Constant"}
        self.initializers |= set(self._constant_nodes)
        self._values: dict[str, np.ndarray] = {}

    def activations(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n and n not in self.initializers]

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` node output (converted on first use), else None."""
        from onnx import numpy_helper

        if name not in self._values:
            if name in self._tensors:
                self._values[name] = numpy_helper.to_array(self._tensors[name])
            elif name in self._constant_nodes:
                node = self._constant_nodes[name]
                if not (node.attribute and node.attribute[0].name == "value"):
                    return None
                self._values[name] = numpy_helper.to_array(node.attribute[0].t)
            else:
                return None
        return self._values[name]
