"""Planning: live state in, a Plan out (pure), rendered and applied by the engine."""
