"""The lab model: schema (pydantic), loading with positions, resolution, semantic checks."""
