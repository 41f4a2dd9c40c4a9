"""Google AudioSet's data: the released feature TFRecords (``records``), its label CSV and ontology (``labels``),
how ten rows of a segment become one vector (``representation``), and AudioSet-shaped synthetic data
(``synthetic``, written fast by ``tfrecord``) for tests and benchmarks."""
