"""Bypassed nodes: left out of the run, their outputs fed by their own inputs.

A node with ``properties.bypass: true`` does not run. Each of its outputs that another node
consumes passes through the first of its inputs (in the template's input order) that is linked
to an output of a compatible type: bypassing ``resize`` hands its upstream image on unchanged.
An output consumed with no such input is an error pinned to the bypassed node
(``bypass_no_passthrough``); a bypassed node whose outputs nobody consumes is simply skipped.
Chains of bypassed nodes resolve through each other.
"""

from __future__ import annotations

from collections.abc import Mapping

from graph_runtime.errors import GraphIssue
from graph_runtime.templates import FunctionTemplate, PortType, link_compatible

Port = tuple[str, str]  # (node id, output name)


class BypassRouter:
    """Where each output of a bypassed node really comes from, given the validated links."""

    def __init__(
        self,
        bypassed: set[str],
        templates: Mapping[str, FunctionTemplate | None],
        links: Mapping[str, Mapping[str, Port]],
    ) -> None:
        self.bypassed = bypassed
        self.templates = templates
        self.links = links

    def source(self, node_id: str, output: str) -> Port | None:
        """The non-bypassed output behind ``node_id.output``; ``None`` when nothing passes."""
        if node_id not in self.bypassed:
            return (node_id, output)
        template = self.templates.get(node_id)
        out = template.output(output) if template else None
        if template is None or out is None:
            return None
        for spec in template.inputs:
            link = self.links.get(node_id, {}).get(spec.name)
            if link is None:
                continue
            upstream = self.source(*link)
            kind = self._type(upstream)
            if upstream is not None and kind is not None and link_compatible(kind, out.type):
                return upstream
        return None

    def _type(self, port: Port | None) -> PortType | None:
        if port is None:
            return None
        template = self.templates.get(port[0])
        out = template.output(port[1]) if template else None
        return out.type if out else None

    def reroute(self) -> tuple[dict[str, dict[str, Port]], list[GraphIssue]]:
        """The links of every node that runs, with bypassed sources replaced, and the issues."""
        issues: list[GraphIssue] = []
        routed: dict[str, dict[str, Port]] = {}
        for nid, links in self.links.items():
            if nid in self.bypassed:
                continue
            routed[nid] = {}
            for port, (src, output) in links.items():
                if src not in self.bypassed:
                    routed[nid][port] = (src, output)
                    continue
                found = self.source(src, output)
                if found is None:
                    issues.append(self._no_passthrough(src, output, nid, port))
                    continue
                target = self.templates.get(nid)
                spec = target.input(port) if target else None
                kind = self._type(found)
                if spec is not None and kind is not None and not link_compatible(kind, spec.type):
                    issues.append(
                        GraphIssue(
                            "type_mismatch",
                            f"input '{port}' takes {spec.type.value} but bypassed '{src}' passes "
                            f"'{found[0]}.{found[1]}' through, which gives {kind.value}",
                            node_id=nid,
                            port=port,
                        )
                    )
                    continue
                routed[nid][port] = found
        return routed, issues

    def _no_passthrough(self, src: str, output: str, consumer: str, port: str) -> GraphIssue:
        template = self.templates.get(src)
        out = template.output(output) if template else None
        kind = out.type.value if out else "?"
        return GraphIssue(
            "bypass_no_passthrough",
            f"node '{src}' is bypassed, but no linked input of it gives a {kind} to pass through "
            f"its output '{output}', which '{consumer}.{port}' uses; link such an input, or turn "
            "bypass off",
            node_id=src,
            port=output,
            extra={"consumer": consumer, "consumer_port": port},
        )
