"""VGGish, the audio embedding model behind AudioSet's released features and IBM's MAX Audio Embedding Generator."""
