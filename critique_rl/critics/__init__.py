"""Critics: turn (question, attempt, reference, verdict) into a natural-language critique.

Backends (``critic.backend``): ``rule`` (rule.py), ``openai`` (openai_api.py), ``hf`` and
``self`` (hf.py); the model backends share generative.py (verdict check, fallback, metrics),
prompting.py (the critic prompt), cache.py and ratelimit.py. ``build_critic`` (factory.py) picks one.
"""

from critique_rl.critics.base import (
    Critic,
    CriticAuthError,
    Critique,
    CritiqueRequest,
)
from critique_rl.critics.factory import build_critic

__all__ = ["Critic", "CriticAuthError", "Critique", "CritiqueRequest", "build_critic"]
