"""Models of the visits app: one row per visit of /visits."""

from django.db import models


class Visit(models.Model):
    visited_at = models.DateTimeField(auto_now_add=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")

    def __str__(self) -> str:
        return f"visit {self.pk} at {self.visited_at.isoformat()}"
