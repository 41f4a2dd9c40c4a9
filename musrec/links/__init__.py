"""Links as input: which YouTube links are accepted (``parse``), fetching just the window of one with yt-dlp under
the host policy (``fetch``, ``ytdlp_env``) behind a proxy that lets connections reach public addresses only
(``guard``), and yt-dlp's failures as short reasons (``errors``)."""
