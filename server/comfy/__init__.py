"""A ComfyUI-compatible API over Takeflow: ComfyUI's HTTP routes and WebSocket protocol, with
each prompt run as a Takeflow task (see ``docs/comfyui.md``).

Only ``server.comfy.bridge`` touches Takeflow; everything else here talks to it.
"""
