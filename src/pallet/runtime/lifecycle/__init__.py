"""The runtime-spec lifecycle operations, one module each: create, start, kill, delete, run, exec;
``manage`` has the rest of runc's verbs (state, list, ps, pause, resume, update, features, spec)."""
