"""
Map HTML that opens without internet: the JavaScript and CSS a folium map loads, embedded.

Folium links Leaflet, jQuery, Bootstrap, Font Awesome and awesome-markers from CDNs, which
planning networks without internet cannot reach. `map_html` renders a map and replaces each
link by the file's content, or drops it when nothing on the map uses it; tile images are the
only thing left to fetch, so base tiles may be missing offline while every vector layer renders.

Where the files come from, and why: the XStatic packages on PyPI, installed with
coverage-planner as ordinary dependencies. XStatic-Leaflet 1.9.3.0 holds Leaflet 1.9.3's dist
files byte for byte as the npm package folium links (leaflet@1.9.3); XStatic-JQuery 3.7.1.1 and
XStatic-D3 3.5.17.1 hold the jQuery 3.7.1 that folium popups call and a D3 3.5 like the one
branca legends draw with. pip checks them like any wheel, and they arrive the same way in an
editable install, a wheel or an air-gapped wheelhouse, so nothing is fetched at run time and no
build hook, Node or npm is needed (npm tarballs fetched by a build step would need either, plus
integrity code of our own, and an install without that step would lack them).
"""

from __future__ import annotations

import base64
import functools
import importlib
import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING

import folium
from branca.element import CssLink, Element, Figure, JavascriptLink
from covplan.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

# Header links by the names folium and branca give them -> (XStatic package, file) to embed.
_BUNDLED = {
    "leaflet": ("xstatic.pkg.leaflet", "leaflet.js"),
    "leaflet_css": ("xstatic.pkg.leaflet", "leaflet.css"),
    "jquery": ("xstatic.pkg.jquery", "jquery.min.js"),
    "d3": ("xstatic.pkg.d3", "d3.js"),
}
# Folium defaults no folium element needs except folium.Icon markers (Bootstrap 5 is used by none).
_ICON_RESOURCES = {"awesome_markers", "awesome_markers_css", "awesome_markers_font_css",
                   "glyphicons_css", "awesome_rotate_css"}
_UNUSED_DEFAULTS = {"bootstrap", "bootstrap_css"}
_EXTERNAL_TAG = re.compile(r"<(?:script[^>]*\ssrc|link[^>]*\shref)\s*=\s*[\"']?(?:https?:)?//",
                           re.IGNORECASE)
_LEAFLET_IMAGES = ("layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png",
                   "marker-shadow.png")


def map_html(fmap: folium.Map, *, self_contained: bool = True) -> str:
    """
    The HTML page of `fmap`, with element names numbered in tree order so that the same map
    gives the same bytes.

    Parameters
    ----------
    fmap
        Any folium map.
    self_contained
        True: Leaflet and every script and style sheet the map uses are embedded and resources
        nothing uses are dropped; only tile URLs remain. False: folium's CDN links stay.

    Raises
    ------
    InputError
        If `self_contained` and the map needs a resource that is not bundled (a folium plugin,
        or folium.Icon markers, which need Font Awesome and Bootstrap's glyphicons).
    """
    root = fmap.get_root()
    _number_elements(root)
    html = root.render()
    if not self_contained:
        return html
    uses_jquery = bool(getattr(fmap, "objects_to_stay_in_front", None)) or any(
        isinstance(e, folium.Popup) for e in walk_elements(root))
    uses_icons = any(isinstance(e, folium.Icon) for e in walk_elements(root))
    for name, link in list(root.header._children.items()):
        if not isinstance(link, (JavascriptLink, CssLink)):
            continue
        tag = link.render()
        if name in _BUNDLED and (name != "jquery" or uses_jquery):
            html = html.replace(tag, _inline(name), 1)
        elif name == "jquery" or name in _UNUSED_DEFAULTS or (name in _ICON_RESOURCES
                                                              and not uses_icons):
            html = html.replace(tag, "", 1)
        elif name in _ICON_RESOURCES:
            msg = ("folium.Icon markers need Font Awesome and Bootstrap glyphicons from a CDN, "
                   "which a self-contained map cannot embed; draw points with folium.CircleMarker "
                   "or folium.DivIcon, or save with self_contained=False.")
            raise InputError(msg)
        else:
            msg = (f"the map loads '{link.url}' ({name}), which is not bundled for offline use; "
                   "remove the element that needs it or save with self_contained=False.")
            raise InputError(msg)
    leftover = _EXTERNAL_TAG.search(html)
    if leftover:
        start = leftover.start()
        msg = (f"the map still links an external file: {html[start:start + 120]!r}; remove the "
               "element that adds it or save with self_contained=False.")
        raise InputError(msg)
    return html


def walk_elements(element: Element) -> Iterator[Element]:
    """Every element under `element` (a Figure's header, html and script included)."""
    yield element
    if isinstance(element, Figure):
        for part in (element.header, element.html, element.script):
            yield from walk_elements(part)
    for child in element._children.values():
        yield from walk_elements(child)


def _number_elements(root: Element) -> None:
    # branca names elements with random hex ids; numbering them in tree order makes the page
    # deterministic (same plan -> same bytes) without changing what it draws.
    counter = itertools.count()
    for element in walk_elements(root):
        element._id = f"{next(counter):04d}"


@functools.cache
def _inline(name: str) -> str:
    """A <script> or <style> element holding the bundled file `name`."""
    module, file = _BUNDLED[name]
    folder = Path(importlib.import_module(module).BASE_DIR)
    text = (folder / file).read_text(encoding="utf-8")
    if file.endswith(".css"):
        if module == "xstatic.pkg.leaflet":
            for image in _LEAFLET_IMAGES:     # the layer-control and default-marker icons
                text = text.replace(f"images/{image}", _data_uri(folder / "images" / image))
        return "<style>" + text.replace("</style", "<\\/style") + "</style>"
    if name == "leaflet":
        # Leaflet finds its default marker images through the style sheet's URL, which a data
        # URI defeats; give it the images directly.
        icons = {"iconUrl": "marker-icon.png", "iconRetinaUrl": "marker-icon-2x.png",
                 "shadowUrl": "marker-shadow.png"}
        options = ", ".join(f'{key}: "{_data_uri(folder / "images" / image)}"'
                            for key, image in icons.items())
        text += f'\nL.Icon.Default.imagePath = "";\nL.Icon.Default.mergeOptions({{{options}}});\n'
    return "<script>" + text.replace("</script", "<\\/script") + "</script>"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
