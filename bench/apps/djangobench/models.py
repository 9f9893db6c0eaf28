from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=40)
    price = models.IntegerField()  # cents

    class Meta:
        app_label = "djangobench"
