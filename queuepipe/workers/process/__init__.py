"""Process workers: the parent's end (:mod:`.parent`), the child interpreter (:mod:`.child`),
the shared-memory slots between them (:mod:`.slots`) and the messages they exchange
(:mod:`.protocol`).  See DESIGN.md, "The slot protocol" and "Shutdown"."""
