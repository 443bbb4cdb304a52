//! dvlab orchestrator.
