from django.shortcuts import render

from .models import Item


def items(request):
    # A small indexed query: the 20 most expensive of 200 rows.
    rows = Item.objects.order_by("-price", "id")[:20]
    return render(request, "djangobench/items.html", {"items": rows, "title": "Price list"})
