"""Critics: turn (question, attempt, reference, verdict) into a natural-language critique."""

from critique_rl.critics.base import Critic, Critique, CritiqueRequest, build_critic

__all__ = ["Critic", "Critique", "CritiqueRequest", "build_critic"]
