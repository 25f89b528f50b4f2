"""Folium maps of coverage results. Each function returns a `folium.Map`; `m=` adds to an existing one."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import branca.colormap as cm
import folium
import geopandas as gpd
import numpy as np

if TYPE_CHECKING:
    from coverage.assess import CoverageResult

OSM_ATTRIBUTION = "© OpenStreetMap contributors"
STYLE = {
    "community_line": "#333333",
    "center": "#1f4e9c",
    "uncovered": "#d7191c",
    "minutes_colors": ["#1a9641", "#a6d96a", "#ffffbf", "#fdae61", "#d7191c"],
    "share_colors": ["#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641"],
    "band_colors": {5.0: "#08519c", 10.0: "#3182bd", 15.0: "#6baed6"},
    "band_default": "#9ecae1",
    "deviation_colors": ["#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b"],
    "unit_radius": 3,
}


def base_map(frame: gpd.GeoDataFrame, *, m: folium.Map | None = None) -> folium.Map:
    """A map fitted to `frame` (any CRS), with OSM tiles and their attribution, or `m` itself."""
    if m is not None:
        return m
    minx, miny, maxx, maxy = frame.to_crs(4326).total_bounds
    fmap = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=13,
                      tiles=None, control_scale=True)
    folium.TileLayer("OpenStreetMap", name="OpenStreetMap", attr=OSM_ATTRIBUTION).add_to(fmap)
    fmap.fit_bounds([[miny, minx], [maxy, maxx]])
    return fmap


def _geojson(frame: gpd.GeoDataFrame, *, simplify_m: float = 0.0) -> str:
    """GeoJSON for display; `simplify_m` thins polygon outlines (metres) to keep maps small."""
    out = frame
    if simplify_m > 0:
        metric = frame.to_crs(frame.estimate_utm_crs())
        out = metric.set_geometry(metric.geometry.simplify(simplify_m, preserve_topology=True))
    out = out.to_crs(4326)
    for col in out.columns:
        if col != "geometry" and out[col].dtype.kind == "f":
            out[col] = out[col].replace([np.inf, -np.inf], np.nan).round(2)
    return out.to_json(na="null")


def minutes_colormap(max_minutes: float) -> cm.LinearColormap:
    """Green (near) to red (twice the limit) for walk minutes."""
    return cm.LinearColormap(STYLE["minutes_colors"], vmin=0, vmax=2 * max_minutes,
                             caption="walk minutes to the nearest center")


def add_units(fmap: folium.Map, units: gpd.GeoDataFrame, *, column: str, max_minutes: float,
              name: str = "residents by walk minutes") -> None:
    """Population units as dots colored by `column` (minutes); grey when beyond the computed range."""
    colormap = minutes_colormap(max_minutes)
    top = 2 * max_minutes

    def style(feature):
        value = feature["properties"].get(column)
        color = "#777777" if value is None or value > top else colormap(value)
        return {"color": color, "fillColor": color, "fillOpacity": 0.8, "weight": 0}

    fields = [c for c in ("unit_id", "pop", column, "community_id", "nearest_center_id")
              if c in units.columns]
    folium.GeoJson(
        _geojson(units[fields + ["geometry"]]), name=name, style_function=style,
        marker=folium.CircleMarker(radius=STYLE["unit_radius"]),
        tooltip=folium.GeoJsonTooltip(fields=fields)).add_to(fmap)
    colormap.add_to(fmap)


def add_uncovered(fmap: folium.Map, units: gpd.GeoDataFrame, *, covered_column: str,
                  max_minutes: float) -> None:
    """Residents beyond the limit, sized by population, in their own layer."""
    out = units[~units[covered_column] & (units["pop"] > 0)]
    group = folium.FeatureGroup(name=f"uncovered residents (> {max_minutes:g} min)")
    if len(out):
        scale = max(float(out["pop"].max()), 1.0)
        for _, row in out.to_crs(4326).iterrows():
            folium.CircleMarker(
                [row.geometry.y, row.geometry.x], radius=3 + 9 * math.sqrt(row["pop"] / scale),
                color=STYLE["uncovered"], fill=True, fill_opacity=0.6, weight=1,
                tooltip=f"{int(row['pop'])} residents beyond {max_minutes:g} min").add_to(group)
    group.add_to(fmap)


def add_isochrones(fmap: folium.Map, isochrones: gpd.GeoDataFrame) -> None:
    """One layer per time band, the largest drawn first so smaller bands stay visible."""
    for band in sorted(isochrones["minutes"].unique(), reverse=True):
        rows = isochrones[(isochrones["minutes"] == band) & ~isochrones.geometry.is_empty]
        color = STYLE["band_colors"].get(float(band), STYLE["band_default"])
        folium.GeoJson(
            _geojson(rows[["center_id", "minutes", "area_m2", "geometry"]], simplify_m=10.0),
            name=f"{band:g}-minute walk", style_function=lambda _f, c=color: {
                "color": c, "weight": 1, "fillColor": c, "fillOpacity": 0.15},
            tooltip=folium.GeoJsonTooltip(fields=["center_id", "minutes"])).add_to(fmap)


def add_centers(fmap: folium.Map, centers: gpd.GeoDataFrame) -> None:
    """Service centers as markers; popups give the population within the limit."""
    group = folium.FeatureGroup(name="service centers")
    for _, row in centers.to_crs(4326).iterrows():
        lines = [f"<b>{row['center_id']}</b>"]
        if "community_id" in row and row["community_id"] is not None:
            lines.append(f"community {row['community_id']}")
        if "pop_within" in row:
            lines.append(f"{int(row['pop_within']):,} residents within reach")
        folium.Marker([row.geometry.y, row.geometry.x], tooltip=str(row["center_id"]),
                      popup=folium.Popup("<br>".join(lines), max_width=250),
                      icon=folium.Icon(color="blue", icon="info-sign")).add_to(group)
    group.add_to(fmap)


def add_communities(fmap: folium.Map, communities: gpd.GeoDataFrame) -> None:
    """Communities filled by the share of residents within the limit of their own center."""
    colormap = cm.LinearColormap(STYLE["share_colors"], vmin=0, vmax=1,
                                 caption="share of residents within the limit of their own center")
    fields = [c for c in ("community_id", "pop", "pop_within_own", "share_within_own",
                          "mean_minutes_own", "max_minutes_own") if c in communities.columns]

    def style(feature):
        share = feature["properties"].get("share_within_own")
        return {"color": STYLE["community_line"], "weight": 1.5,
                "fillColor": "#cccccc" if share is None else colormap(share), "fillOpacity": 0.35}

    folium.GeoJson(_geojson(communities[fields + ["geometry"]], simplify_m=5.0), name="communities",
                   style_function=style, tooltip=folium.GeoJsonTooltip(fields=fields)).add_to(fmap)
    colormap.add_to(fmap)


def coverage_map(result: CoverageResult, *, isochrones: gpd.GeoDataFrame | None = None,
                 m: folium.Map | None = None) -> folium.Map:
    """
    The as-is coverage map: communities by share covered, isochrones, units by minutes,
    uncovered residents and centers, with a layer control.
    """
    fmap = base_map(result.units, m=m)
    if result.communities is not None:
        add_communities(fmap, result.communities)
    if isochrones is not None:
        add_isochrones(fmap, isochrones)
    column = "minutes_own" if result.communities is not None else "minutes_nearest"
    covered = "covered_own" if result.communities is not None else "covered"
    add_units(fmap, result.units, column=column, max_minutes=result.max_minutes)
    add_uncovered(fmap, result.units, covered_column=covered, max_minutes=result.max_minutes)
    add_centers(fmap, result.centers)
    folium.LayerControl(collapsed=False).add_to(fmap)
    return fmap


def isochrone_map(isochrones: gpd.GeoDataFrame, centers: gpd.GeoDataFrame, *,
                  m: folium.Map | None = None) -> folium.Map:
    """Isochrone bands and their centers, with a layer control."""
    fmap = base_map(isochrones[~isochrones.geometry.is_empty] if (~isochrones.geometry.is_empty).any()
                    else centers, m=m)
    add_isochrones(fmap, isochrones)
    add_centers(fmap, centers)
    folium.LayerControl(collapsed=False).add_to(fmap)
    return fmap


def add_plan_communities(fmap: folium.Map, communities: gpd.GeoDataFrame, *, target_pop: float,
                         tolerance: float) -> None:
    """Communities filled by deviation from the target: blue under, white on target, red over."""
    span = max(2 * tolerance, 0.05)
    colormap = cm.LinearColormap(STYLE["deviation_colors"], vmin=-span, vmax=span,
                                 caption=f"deviation from {target_pop:,.0f} residents (±{tolerance:.0%} allowed)")
    frame = communities.copy()
    frame["deviation"] = (frame["population"] / target_pop - 1).round(3)
    fields = [c for c in ("community_id", "population", "deviation", "center_id", "mean_minutes",
                          "max_minutes", "previous_ids", "note") if c in frame.columns]

    def style(feature):
        dev = feature["properties"].get("deviation") or 0.0
        return {"color": STYLE["community_line"], "weight": 2,
                "fillColor": colormap(max(-span, min(span, dev))), "fillOpacity": 0.45}

    folium.GeoJson(_geojson(frame[fields + ["geometry"]], simplify_m=5.0), name="new communities",
                   style_function=style, tooltip=folium.GeoJsonTooltip(fields=fields)).add_to(fmap)
    colormap.add_to(fmap)


def add_previous(fmap: folium.Map, previous: gpd.GeoDataFrame) -> None:
    """Old community boundaries, dashed, without fill."""
    fields = [c for c in ("community_id", "name") if c in previous.columns]
    folium.GeoJson(_geojson(previous[fields + ["geometry"]], simplify_m=5.0),
                   name="old communities (dashed)",
                   style_function=lambda _f: {"color": "#555555", "weight": 1.5, "dashArray": "6 4",
                                              "fillOpacity": 0},
                   tooltip=folium.GeoJsonTooltip(fields=fields)).add_to(fmap)


def add_plan_centers(fmap: folium.Map, centers: gpd.GeoDataFrame, communities: gpd.GeoDataFrame) -> None:
    """Planned centers: kept existing sites in blue, new sites in green; popups with figures."""
    info = communities.set_index("community_id")
    group = folium.FeatureGroup(name="service centers")
    for _, row in centers.to_crs(4326).iterrows():
        c = info.loc[row["community_id"]]
        popup = (f"<b>{row['center_id']}</b> ({'existing' if row['existing'] else 'new site'})<br>"
                 f"community {row['community_id']}: {int(c['population']):,} residents<br>"
                 f"mean {c['mean_minutes']:.1f} min, worst {c['max_minutes']:.1f} min")
        if c.get("previous_ids"):
            popup += f"<br>from: {c['previous_ids']}"
        folium.Marker([row.geometry.y, row.geometry.x], tooltip=str(row["center_id"]),
                      popup=folium.Popup(popup, max_width=300),
                      icon=folium.Icon(color="blue" if row["existing"] else "green",
                                       icon="home")).add_to(group)
    group.add_to(fmap)


def plan_map(plan, *, m: folium.Map | None = None) -> folium.Map:
    """New communities by deviation from target, centers, isochrones, old boundaries dashed."""
    fmap = base_map(plan.communities, m=m)
    add_plan_communities(fmap, plan.communities, target_pop=plan.config.target_pop,
                         tolerance=plan.config.tolerance)
    add_isochrones(fmap, plan.isochrones)
    if plan.previous is not None:
        add_previous(fmap, plan.previous)
    unserved = plan.units[plan.units["community_id"].isna()].copy()
    unserved["served"] = False
    add_uncovered(fmap, unserved, covered_column="served", max_minutes=plan.config.max_minutes)
    add_plan_centers(fmap, plan.centers, plan.communities)
    folium.LayerControl(collapsed=False).add_to(fmap)
    return fmap
