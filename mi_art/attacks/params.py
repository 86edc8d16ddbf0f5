"""What an attack says about a parameter it does not take: a ``ValueError`` naming the parameter, the ones it
takes and, for a name of ART's attacks (``max_iter``), the name it has here. ART's own ``set_params`` says only
that the attribute cannot be set, and Python's constructor error names the keyword alone."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Sequence

#: ART's names (its MIFace and evasion attacks take ``max_iter``) for what the GAN attacks call ``iterations``.
ART_NAMES: Dict[str, str] = {"max_iter": "iterations", "nb_iter": "iterations", "lr": "learning_rate"}


def check_known_params(attack: str, given: Iterable[str], valid: Sequence[str],
                       renamed: Mapping[str, str] = ART_NAMES) -> None:
    """Refuse the names of ``given`` outside ``valid`` in one ``ValueError``.

    :param attack: The attack's name, for the message.
    :param renamed: Another library's name -> this attack's name for the same parameter."""
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return
    hints = [f"{attack} takes no {name!r}" + (" (the name in ART's attacks)" if name in ART_NAMES else "")
             + f": give {renamed[name]}=... instead" for name in unknown if renamed.get(name) in valid]
    others = [repr(name) for name in unknown if renamed.get(name) not in valid]
    parts = hints + ([f"{attack} takes no parameter {', '.join(others)}"] if others else [])
    raise ValueError(f"{'; '.join(parts)}. Its parameters: {', '.join(sorted(valid))}")


class ExplainedParams:
    """A mixin for ART attacks: ``set_params`` refuses an unknown name with :func:`check_known_params`'s message
    (a subclass's constructor calls it on the keywords it did not take, ``**unknown``)."""

    attack_params: Sequence[str] = ()
    #: Other names of this attack's parameters (default: ART's, :data:`ART_NAMES`).
    renamed_params: Mapping[str, str] = ART_NAMES

    def _refuse_unknown(self, given: Iterable[str]) -> None:
        check_known_params(type(self).__name__, given, self.attack_params, self.renamed_params)

    def set_params(self, **kwargs: Any) -> None:
        self._refuse_unknown(kwargs)
        super().set_params(**kwargs)  # type: ignore[misc]
