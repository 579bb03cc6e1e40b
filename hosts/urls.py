from django.urls import path

from hosts import views

urlpatterns = [
    path("hosts/", views.hypervisor_list, name="hypervisor_list"),
    path("hosts/add/", views.hypervisor_add, name="hypervisor_add"),
    path("hosts/<slug:name>/", views.hypervisor_detail, name="hypervisor_detail"),
    path("hosts/<slug:name>/edit/", views.hypervisor_edit, name="hypervisor_edit"),
    path("hosts/<slug:name>/refresh/", views.hypervisor_refresh, name="hypervisor_refresh"),
    path("hosts/<slug:name>/domains/<str:uuid>/", views.domain_detail, name="domain_detail"),
    path("hosts/<slug:name>/domains/<str:uuid>/disks/<str:target>/", views.disk_detail, name="disk_detail"),
]
