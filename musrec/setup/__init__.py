"""First run and health: fetching and verifying the VGGish files (``models``) and AudioSet's features
(``features``) with resumable downloads (``download``, ``files``), remembering what was done (``state``), building
the default index (``provision``), and ``musrec doctor`` (``doctor``). Reads the configuration."""
