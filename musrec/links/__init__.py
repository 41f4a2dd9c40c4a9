"""Links as input: which YouTube links are accepted (``parse``), fetching just the window of one with yt-dlp under
the address policy (``fetch``, ``ytdlp_env``), and yt-dlp's failures as short reasons (``errors``)."""
