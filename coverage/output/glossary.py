"""
What each key of a plan's report.json means, with its unit: one place, written into the report.

``GLOSSARY`` holds one line per report key (top-level keys and the names of the per-district
figures under ``districts``). `tests/test_glossary.py` fails when a plan's report has a key
without an entry here: add the entry when you add a key to `covplan.metrics.plan_report`,
`covplan.plan.replan` or `problems`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["GLOSSARY", "glossary_for", "problems"]

GLOSSARY: dict[str, str] = {
    # Residents and coverage (`covplan.metrics.coverage_figures`).
    "population_total": "residents in the plan's units (persons); per district: of the district",
    "population_assigned": "residents placed in a community (persons)",
    "population_covered": "residents within the walking limit of their own community's center "
                          "(persons)",
    "population_uncovered": "population_total minus population_covered (persons)",
    "coverage_share": "population_covered / population_total (share 0-1)",
    "nearest_center_share": "residents within the walking limit of the nearest planned center / "
                            "population_total (share 0-1)",
    "population_beyond_nearest": "residents beyond the walking limit of every planned center "
                                 "(persons)",
    "coverage_share_of_reachable": "population_covered / residents who reach any candidate site "
                                   "within the limit (share 0-1)",
    "unreachable_population": "residents who reach no candidate site within the walking limit "
                              "(persons); per district: of the district",
    # Walks and communities.
    "communities": "communities planned (count)",
    "mean_minutes": "resident-weighted mean walk of assigned residents to their own center "
                    "(minutes); null without residents",
    "max_minutes": "longest walk of an assigned resident to their own center (minutes; the limit "
                   "itself is parameters.max_minutes); null without assigned residents",
    "within_tolerance_share": "communities whose population lies within target_pop ± tolerance / "
                              "communities (share 0-1)",
    "contiguous_share": "communities whose territory is one piece / communities (share 0-1)",
    "communities_proven_not_contiguous": "communities no plan covering everyone can make one piece: "
                                         "residents whose only reachable site is the center, in "
                                         "pieces no chain of units within its walk joins (count)",
    "population_min": "residents of the smallest community (persons)",
    "population_max": "residents of the largest community (persons)",
    "new_centers": "communities whose center is a newly sited one ('new-…' ids) (count)",
    # Center decisions (`covplan.plan.decisions`, layer center_decisions, center_decisions.csv).
    "centers_kept": "existing center sites (input centers) the plan uses as a community's center "
                    "(count)",
    "centers_closed": "existing center sites the plan does not use and that no new site "
                      "replaces (count); reasons in center_decisions.csv",
    "centers_moved": "existing center sites not used whose old community's id went to a "
                     "community with a new site: the center moved there (count)",
    "centers_new": "new sites the plan opened as a community's center (count; in a re-plan also "
                   "the base plan's new sites kept)",
    "centers_locked": "existing centers locked open with --lock-centers / lock_centers (count)",
    "centers_locked_not_kept": "locked centers the plan does not use as a community's center: "
                               "the planner found no community around them that meets the "
                               "rules (count; reasons in center_decisions.csv)",
    # Balance against what the walking rule allows (`covplan.metrics.balance_figures`).
    "coverage_ceiling": "the highest coverage_share any plan can reach: 1 - unreachable_population "
                        "/ population_total (share 0-1)",
    "within_tolerance_pop_share": "residents in communities within the band / population_total "
                                  "(share 0-1)",
    "within_tolerance_pop_share_ceiling": "the highest within_tolerance_pop_share any plan can "
                                          "reach, given forced-undersized and unreachable "
                                          "residents (share 0-1)",
    "within_tolerance_pop_share_ceiling_rules": "the highest within_tolerance_pop_share a plan "
                                                "keeping every rule (walking, and no regular "
                                                "community below min_pop_exception) can reach: "
                                                "the ceiling less, per district, the larger of "
                                                "count_short_population, "
                                                "packing_short_population and "
                                                "separated_short_population (share 0-1)",
    "count_short_population": "residents no plan covering everyone can put in balanced "
                              "communities because of the count of centers alone: covering "
                              "every resident takes more centers than the residents fill at the "
                              "band's floor, with no regular community below min_pop_exception "
                              "(persons; 0 where the count leaves room)",
    "packing_short_population": "residents no plan keeping every rule can put in balanced "
                                "communities because the circles that cover everyone overlap "
                                "too little to fill communities within the band, proven by a "
                                "linear program over the sites: per district the larger of two, "
                                "one over a whole district where covering everyone takes as "
                                "many centers as the residents fill at the band's floor (when it "
                                "has no solution, one regular community stays outside the band "
                                "with min_pop_exception x target_pop residents or more), one "
                                "around the plan's communities outside the band and their "
                                "neighbours (its optimum: the fewest residents outside the band "
                                "there in any plan) (persons)",
    "separated_short_population": "residents no plan keeping every rule can put in balanced "
                                  "communities because residents who share no reachable site "
                                  "need a community each, and the residents around their sites "
                                  "cannot fill all of them to the band's floor, proven per "
                                  "district by a linear program over those communities "
                                  "(persons; 0 where it proves nothing)",
    "forced_undersized_population": "residents who provably can only be in a community below the "
                                    "band (persons)",
    "island_population": "residents cut off from the main walking network (persons)",
    "exception_communities": "communities that are proven exceptions (island or remote pocket) "
                             "(count)",
    "exception_population": "residents of exception communities (persons)",
    "served_remotely_population": "residents assigned to a center they do not reach within the "
                                  "limit (exception areas attached to a community) (persons)",
    "island_covered_population": "island residents within the walking limit of their own "
                                 "center (persons)",
    "smallest_regular_community": "residents of the smallest community that is not an exception "
                                  "(persons); null when there is none",
    "regular_communities_below_min_pop_exception": "non-exception communities below "
                                                   "parameters.min_pop_exception × target_pop "
                                                   "residents (count)",
    "tiny_communities_locked": "of those, communities whose neighbourhood (the community and "
                               "its neighbours, or the communities within two rings of it) "
                               "provably has no split without one below that floor while the "
                               "rest of the plan, other tiny communities included, stays as it "
                               "is, a linear program over the sites; not a claim about every "
                               "plan (count; the proofs in their notes)",
    "districts": "the balance figures above per district id ('(outside)' for residents outside "
                 "every district) (object of objects); only with districts",
    # Merge/split against the existing division.
    "stability_share": "residents who stay in the continuation of their old community / "
                       "population_total (share 0-1); null without existing communities",
    "kept_communities": "existing communities (merge/split input) kept whole: same members and "
                        "center, and their old id (count); 0 without existing communities and "
                        "in an incremental re-plan (see frozen_communities)",
    # Incremental re-plan (`covplan.plan.replan.replan`).
    "frozen_communities": "base-plan communities an incremental re-plan left untouched: same id, "
                          "members and center (count); 0 in a full plan",
    "mode": "re-plan mode: 'incremental' (only touched communities re-solved) or 'full' "
            "(a change binds every community); only in a re-plan",
    "full_reason": "why a re-plan re-solved everything (text); only when mode is 'full'",
    "touched_communities": "base-plan community ids the changes touch (list of ids); only in a "
                           "re-plan",
    "touch_reasons": "per touched base-plan community id, the first reason found (object id -> "
                     "text); only in a re-plan",
    "replanned_communities": "base-plan community ids re-solved: the touched ones plus bordering "
                             "ones (list of ids); only in a re-plan",
    "new_communities": "ids of the re-solved communities in the result (list of ids); only in a "
                       "re-plan",
    # Problems.
    "issues": "inputs the planner repaired, one line each (list of text); kept for now, superseded "
              "by problems (severity 'warning')",
    "rule_issues": "where the plan cannot meet a rule, one line each (list of text); kept for now, "
                   "superseded by problems (severity 'error'); only in `covplan plan` and re-plans",
    "grids": "the grids' (网格) figures when planned with --grids: grid count, share within "
             "the grid band and grids_within_tolerance_ceiling (the grids less those proven "
             "unable to reach the band), within_tolerance_share_bound (the largest share of "
             "grids in band any split of these communities can have: grids_within_tolerance_max "
             "balanced at most, grids_holding_forced_min undersized at least), residents within "
             "grid_minutes of their station and its ceiling, worst walk, stability (object; null "
             "without grids)",
    "warnings": "inputs that look implausible but were used as given (a cell denser than "
                "100,000 residents per km2, overlapping cells, a target above the population), "
                "one line each (list of text)",
    "problems": "issues, warnings and rule_issues in one list: each {severity: 'error' (a broken "
                "rule) or 'warning' (a repaired or implausible input), kind, message} (list of "
                "objects)",
    # Provenance.
    "runtime_s": "planning time (seconds)",
    "parameters": "the PlanConfig that produced the plan (object: target_pop in persons, "
                  "tolerance as a share, max_minutes in minutes, walk_speed_kmh in km/h, "
                  "candidate_spacing_m in metres, ...)",
    "version": "covplan version that wrote the plan (text)",
    "plan_id": "the id every file of this plan folder carries (manifest.json lists the files "
               "and their sha256); read_plan refuses a folder mixing files of two plans (text)",
    "glossary": "this list: the meaning and unit of each report key (object key -> text)",
}


def glossary_for(report: Mapping) -> dict[str, str]:
    """The glossary entries of `report`'s keys and its districts' keys, in the report's order;
    a key without an entry gets 'undocumented'."""
    keys = list(report)
    for figures in (report.get("districts") or {}).values():
        keys += [k for k in figures if k not in keys]
    keys += [k for k in ("problems", "glossary") if k not in keys]
    return {k: GLOSSARY.get(k, "undocumented") for k in keys}


# Repaired inputs (`covplan.plan.pipeline`): a kind for each message, by what it says.
_WARNING_KINDS = (
    ("cut by a district limit", "district_cut"),
    ("outside every district", "outside_districts"),
    ("existing communities overlap", "overlapping_communities"),
    ("existing communities leave gaps", "community_gaps"),
    ("stands outside its community", "center_outside_community"),
)


def problems(report: Mapping) -> list[dict[str, str]]:
    """
    `issues` (repaired inputs) and `warnings` (implausible inputs), severity "warning", and
    `rule_issues` (broken rules, severity "error") as one list of {severity, kind, message},
    errors first. The kind of a broken rule
    is the rule ('walking_rule', 'balance_rule', 'contiguity_rule'); of a repair, what was
    repaired ('input_repair' when the message is not one the planner writes today).
    """
    out = []
    for message in report.get("rule_issues") or []:
        head = re.match(r"\s*([a-z ]+ rule):", str(message))
        kind = head.group(1).strip().replace(" ", "_") if head else "rule"
        out.append({"severity": "error", "kind": kind, "message": str(message)})
    for message in report.get("issues") or []:
        kind = next((k for needle, k in _WARNING_KINDS if needle in str(message)), "input_repair")
        out.append({"severity": "warning", "kind": kind, "message": str(message)})
    for message in report.get("warnings") or []:
        out.append({"severity": "warning", "kind": "implausible_input", "message": str(message)})
    return out
