"""The custom search attributes operators filter on in the Temporal UI, and their one builder.

Pure (temporalio.common only), so workflows, activities and the API all import it.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

ORG_KEY = SearchAttributeKey.for_keyword("ForgelineOrgId")
PROJECT_KEY = SearchAttributeKey.for_keyword("ForgelineProjectId")
KIND_KEY = SearchAttributeKey.for_keyword("ForgelineKind")
SEARCH_ATTRIBUTE_NAMES = (ORG_KEY.name, PROJECT_KEY.name, KIND_KEY.name)


def forgeline_search_attributes(
    kind: str, *, organization_id: object | None = None, project_id: object | None = None
) -> TypedSearchAttributes:
    """Kind always; organization and project when the execution has them."""
    pairs = [SearchAttributePair(KIND_KEY, kind)]
    if organization_id is not None:
        pairs.append(SearchAttributePair(ORG_KEY, str(organization_id)))
    if project_id is not None:
        pairs.append(SearchAttributePair(PROJECT_KEY, str(project_id)))
    return TypedSearchAttributes(pairs)
